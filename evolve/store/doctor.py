"""`evolve doctor`: check that a store's backend really gives create-once before trusting it.

Everything in the engine rests on exclusive create. Some backends only pretend:
s3fs before 2025.7 ignored ``mode="create"`` and overwrote, some S3-compatible
servers ignore ``If-None-Match: *``, NFSv2 has no exclusive create. The checks
run in a scratch prefix ``doctor/<uuid>/`` of the store, removed afterwards.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata

from evolve.store.backend import Store, StoreError

THREADS = 8
LISTING_LAG_LIMIT = 10.0  # seconds a fresh write may take to appear in listings before the store is refused


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class DoctorReport:
    url: str
    protocol: str
    versions: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def lines(self) -> list[str]:
        """A plain-text report, one line per check."""
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        out = [f"store {self.url} (protocol {self.protocol}; {versions})"]
        out += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        out.append("healthy" if self.ok else "NOT healthy: evolve will refuse this store")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _versions(protocol: str) -> dict[str, str]:
    names = ["fsspec"]
    names += {
        "s3": ["s3fs", "botocore"],
        "s3a": ["s3fs", "botocore"],
        "gs": ["gcsfs"],
        "gcs": ["gcsfs"],
        "az": ["adlfs"],
        "abfs": ["adlfs"],
        "abfss": ["adlfs"],
    }.get(protocol, [])
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _old_s3fs(versions: dict[str, str]) -> bool:
    try:
        year, month = (int(p) for p in versions.get("s3fs", "").split(".")[:2])
    except ValueError:
        return False
    return (year, month) < (2025, 7)


def _check_create_once(store: Store, scratch: str) -> str:
    key = f"{scratch}create-once.bin"
    if not store.create(key, b"first writer"):
        raise AssertionError("first create of a fresh key answered 'exists'")
    if store.create(key, b"second writer"):
        raise AssertionError(
            "a second create of the same key succeeded: this backend overwrites "
            "instead of refusing (exclusive create is not honoured)"
        )
    content = store.read_bytes(key)
    if content != b"first writer":
        raise AssertionError(
            f"the second create was refused but the content changed to {content!r}: "
            "the backend overwrote silently"
        )
    return "a second writer of the same key is refused and the first writer's content stays"


def _check_race(store: Store, scratch: str) -> str:
    key = f"{scratch}race.bin"
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def contender(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = store.create(key, f"thread {i}".encode())
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=contender, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise AssertionError(f"{len(errors)} of {THREADS} racing writers failed: {errors[0]}")
    winners = [i for i, r in enumerate(results) if r is True]
    if len(winners) != 1:
        raise AssertionError(
            f"{THREADS} threads racing to create one key: {len(winners)} winners, expected 1"
        )
    content = store.read_bytes(key)
    if content != f"thread {winners[0]}".encode():
        raise AssertionError(f"the race's winner was thread {winners[0]} but the key holds {content!r}")
    return f"{THREADS} threads racing on one key: exactly one winner, and its content"


def _check_visible(store: Store, scratch: str) -> str:
    prefix = f"{scratch}fresh/"
    before = store.list_keys(prefix)  # also primes any listing cache, which must not go stale
    key = f"{prefix}000.json"
    store.create_json(key, {"fresh": True})
    written = time.monotonic()
    while key not in (listed := store.list_keys(prefix)):
        if time.monotonic() - written > LISTING_LAG_LIMIT:
            raise AssertionError(
                f"a fresh write is still missing from the listing after {LISTING_LAG_LIMIT:.0f} s "
                f"(saw {before} before, {listed} after)"
            )
        time.sleep(0.1)
    lag = time.monotonic() - written
    if not store.exists(key):
        raise AssertionError("a fresh write does not exist() right after it was written")
    record = store.read_json(key)
    if not record or record.get("fresh") is not True:
        raise AssertionError(f"a fresh write reads back as {record!r}")
    if lag > 0.05:
        return f"a fresh write exists and reads back at once; listings lag ({lag:.1f} s here), which views tolerate"
    return "a fresh write is listed, exists and reads back immediately"


def _check_read_write(store: Store, scratch: str) -> str:
    key = f"{scratch}soft.json"
    store.put_json(key, {"n": 1})
    store.put_json(key, {"n": 2})
    record = store.read_json(key)
    if record != {"n": 2}:
        raise AssertionError(f"put_json then read_json gave {record!r}, expected {{'n': 2}}")
    blob = os.urandom(64 * 1024)
    if not store.create_blob(f"{scratch}blob.bin", blob) or store.read_bytes(f"{scratch}blob.bin") != blob:
        raise AssertionError("a 64 KiB blob did not read back identical")
    store.delete(f"{scratch}blob.bin")
    if store.read_bytes(f"{scratch}blob.bin") is not None:
        raise AssertionError("a deleted key still reads back")
    return "writes, replaces, reads and deletes"


def _check_hard_links(store: Store, scratch: str) -> str:
    folder = os.path.join(store.root, *scratch.rstrip("/").split("/"))
    os.makedirs(folder, exist_ok=True)
    src, dst = os.path.join(folder, "link-src"), os.path.join(folder, "link-dst")
    with open(src, "wb") as f:
        f.write(b"x")
    try:
        os.link(src, dst)
    except OSError as exc:
        raise AssertionError(
            f"os.link failed ({exc.strerror or exc}): this filesystem cannot give create-once to evolve"
        ) from exc
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    else:
        raise AssertionError("os.link onto an existing name succeeded: link is not exclusive here")
    if os.stat(src).st_nlink != 2:
        raise AssertionError(f"after os.link the file has {os.stat(src).st_nlink} links, expected 2")
    return "os.link works and is exclusive"


def doctor(store: Store) -> DoctorReport:
    """Run the health checks in ``doctor/<uuid>/`` of ``store`` and clean up after."""
    report = DoctorReport(url=store.url, protocol=store.protocol, versions=_versions(store.protocol))
    scratch = f"doctor/{uuid.uuid4().hex}/"
    checks = [("hard links (os.link)", _check_hard_links)] if store.local else []
    checks += [
        ("store is writable and readable", _check_read_write),
        ("create-once refuses a second writer", _check_create_once),
        (f"create-once race ({THREADS} threads)", _check_race),
        ("fresh writes are visible", _check_visible),
    ]
    try:
        for name, fn in checks:
            try:
                detail = fn(store, scratch)
                report.checks.append(Check(name, True, detail))
            except AssertionError as exc:
                report.checks.append(Check(name, False, str(exc)))
            except Exception as exc:  # noqa: BLE001 - any failure is the check's verdict
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                report.checks.append(Check(name, False, f"{type(exc).__name__}: {text}"))
            if name == "store is writable and readable" and not report.checks[-1].ok:
                break  # nothing else can work
    finally:
        try:
            store.delete_prefix(scratch)
            if store.local:
                os.rmdir(os.path.join(store.root, "doctor"))  # only if empty: another doctor may be running
        except Exception:  # noqa: BLE001, S110 - cleanup is best effort; the verdict stands
            pass
    if store.protocol in ("s3", "s3a") and _old_s3fs(report.versions):
        for check in report.checks:
            if check.name.startswith("create-once") and not check.ok:
                check.detail += (
                    f" (s3fs {report.versions['s3fs']} < 2025.7 ignores mode='create': upgrade s3fs)"
                )
    return report


def require_healthy(store: Store) -> DoctorReport:
    """Run ``doctor`` and raise ``StoreError`` naming the first failing check."""
    report = doctor(store)
    if not report.ok:
        bad = report.failures[0] if report.failures else None
        reason = f"{bad.name}: {bad.detail}" if bad else "no checks ran"
        raise StoreError(f"store {store.url!r} failed `evolve doctor` ({reason})")
    return report
