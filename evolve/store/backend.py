"""The population store: immutable create-once records on any fsspec filesystem.

Every guarantee the engine needs comes from one primitive, ``create(key, data)``,
which writes ``key`` only if it does not exist yet and says whether we did it
(docs/ARCHITECTURE.md, "atomicity from exclusive create"):

* local paths (``file``, which covers NFS mounts): the bytes go to a temp file in
  the same folder, are fsynced, then hard-linked into place with ``os.link``
  (exclusive: it fails if the name exists) and the temp name is removed. A reader
  never sees a half-written record, and a crash leaves only an ignored
  ``.tmp-*`` file. The folder is fsynced after the link.
* ``s3://``: ``fs.pipe_file(path, data, mode="create")``, which s3fs (>= 2025.7)
  sends as a PUT with ``If-None-Match: *``. The PUT also carries a per-call writer
  token as object metadata (``x-amz-meta-evolve-writer``).
* ``memory://`` and others (gcs, ...): ``fs.open(path, "xb")``. The memory
  filesystem checks then writes, so here writes are also serialised by a
  process-wide lock (memory:// is process-local, so that is exactly enough).

Outcomes can be ambiguous: a create whose reply was lost can be retried (by us,
by botocore, by the NFS client) and answer "exists" although the first attempt
landed. ``create_json`` stamps every record with a writer ``nonce`` and, on
"exists", a 409/412 or after a transient failure, reads the record back and
compares nonces; ``create_blob`` compares bytes. Plain ``create`` on S3 compares
the writer token in the object's metadata: botocore retries a PUT whose reply was
lost on its own and hands us only the final 412, so "did an attempt of ours fail
ambiguously?" cannot be answered from what reaches the store.

``Store.outcomes`` counts what the store itself had to resolve (retries after
transient errors, "exists" answers read back as ours or another writer's); errors
that botocore or s3fs retried away never reach it.

The store knows nothing of genomes, torch, workers or the step protocol.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from evolve.store.failures import CorruptRecord, StoreError, classify, http_status, is_backend_error, reason
from evolve.store.keys import RUN_KEY
from evolve.store.listing import TMP_PREFIX, Listings

__all__ = ["CorruptRecord", "Store", "StoreError"]

# -- keys -------------------------------------------------------------------------------------

WRITER_META = "evolve-writer"  # S3 user metadata: the token of the create() call that wrote the object
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/") or "\\" in key:
        raise ValueError(f"invalid store key {key!r}: a relative path like 'individuals/000000000042.json'")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[-1].startswith(TMP_PREFIX):
        raise ValueError(f"invalid store key {key!r}")
    return key


# backoff jitter from a private generator: never disturb a seeded global ``random``
_JITTER = random.Random()

# the writer token of the create() call running in each thread (read by _raw_create)
_CALL = threading.local()

# memory:// lives in this process only; serialising our writers makes check-then-write atomic
_MEMORY_LOCK = threading.RLock()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the link itself is still atomic
    finally:
        os.close(fd)


def _encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


# -- the store ----------------------------------------------------------------------------------


class Store(Listings):
    """A population store at ``url`` (any fsspec URL); picklable, opens its filesystem lazily.

    Keys are relative paths (``individuals/000000000042.json``). Records are immutable:
    ``create*`` never overwrites; only ``put_json`` (soft data such as heartbeats) replaces
    and only ``delete`` (garbage collection) removes.
    """

    retries: int = 6  # attempts for one operation on transient errors
    backoff: float = 0.05  # first backoff in seconds, doubled per attempt (with jitter)
    max_backoff: float = 2.0

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec.utils

        url = os.fspath(url)
        if not url:
            raise StoreError("store URL is empty")
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.protocol: str = fsspec.utils.get_protocol(url)
        self.local: bool = self.protocol in ("file", "local") and "::" not in url
        if self.local:
            path = re.sub(r"^(file|local)://", "", url)
            self.root: str = os.path.abspath(os.path.expanduser(path))
            self.url: str = self.root
        else:
            self.url = url.rstrip("/")
            self.root = ""  # filled when the filesystem opens (its own path form)
        self._fs: Any = None
        self._fs_pid: int | None = None
        self.outcomes: Counter[str] = Counter()
        self._outcomes_lock = threading.Lock()
        self._folders: set[str] = set()  # local folders this process made or found (a makedirs is a few syscalls)

    # -- plumbing ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fs"] = None
        state["_fs_pid"] = None
        state["outcomes"] = Counter()
        state["_folders"] = set()
        del state["_outcomes_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._outcomes_lock = threading.Lock()

    def _note(self, outcome: str) -> None:
        with self._outcomes_lock:
            self.outcomes[outcome] += 1

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (opened on first use, and again in a forked child)."""
        if self._fs is None or self._fs_pid != os.getpid():
            import fsspec.core

            try:
                fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except Exception as exc:  # unknown protocol, missing package, bad options
                raise StoreError(f"cannot open store {self.url!r}: {reason(exc)}") from exc
            if not self.local:
                self.root = root.rstrip("/")
            self._fs, self._fs_pid = fs, os.getpid()
        return self._fs

    def _path(self, key: str) -> str:
        _check_key(key)
        if self.local:
            return os.path.join(self.root, *key.split("/"))
        _ = self.fs  # opening the filesystem sets self.root
        return f"{self.root}/{key}" if self.root else key

    def _where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _sleep(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt)
        time.sleep(delay * (0.5 + _JITTER.random()))

    def _retrying(self, what: str, key: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``, retrying transient errors with bounded backoff; others become StoreError."""
        last: BaseException | None = None
        for attempt in range(self.retries):
            try:
                return fn()
            except Exception as exc:
                kind = classify(exc)
                if kind != "transient":
                    if isinstance(exc, StoreError):
                        raise
                    if (not isinstance(exc, (OSError, ValueError)) and http_status(exc)[0] is None
                            and not is_backend_error(exc)):
                        raise
                    raise StoreError(f"{what} {self._where(key)}: {reason(exc)}") from exc
                last = exc
                self._note("transient")
                if attempt + 1 < self.retries:
                    self._sleep(attempt)
        raise StoreError(
            f"{what} {self._where(key)}: gave up after {self.retries} attempts "
            f"({reason(last) if last else 'unknown error'})"
        ) from last

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, storage_options: dict[str, Any] | None = None, create: bool = False) -> Store:
        """Open the store at ``url``.

        ``create=True``: make the root folder (local: with its parents) if needed; the
        location must be writable. ``create=False``: an evolve run (``run.json``) must exist.
        Problems are one-line ``StoreError``s naming the URL.
        """
        store = cls(url, storage_options)
        if store.local:
            store._open_local(create)
        elif create:
            store._open_remote()
        if not create and not store.exists(RUN_KEY):
            raise StoreError(f"no evolve run at {store.url!r} (run.json missing)")
        return store

    def _open_local(self, create: bool) -> None:
        root = self.root
        if create:
            if os.path.exists(root) and not os.path.isdir(root):
                raise StoreError(f"cannot use {self.url!r} as a store: it is a file, not a folder")
            try:
                os.makedirs(root, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create store folder {self.url!r}: {exc.strerror or reason(exc)}"
                ) from exc
            if not os.access(root, os.W_OK | os.X_OK):
                raise StoreError(f"store folder {self.url!r} is not writable")
            return
        if not os.path.isdir(root):
            parent = os.path.dirname(root)
            if not os.path.isdir(parent):
                raise StoreError(f"no evolve run at {self.url!r} (folder {parent!r} does not exist)")
            if os.path.exists(root):
                raise StoreError(f"no evolve run at {self.url!r} (it is a file, not a folder)")
            raise StoreError(f"no evolve run at {self.url!r} (folder does not exist)")

    def _open_remote(self) -> None:
        fs = self.fs
        try:
            if self.protocol == "memory" or type(fs).__name__ == "MemoryFileSystem":
                fs.makedirs(self.root, exist_ok=True)
                return
            bucket = self.root.split("/", 1)[0]
            if (
                bucket
                and self.protocol in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
                and not self._bucket_visible(bucket)
            ):
                raise StoreError(
                    f"cannot open store {self.url!r}: bucket {bucket!r} does not exist "
                    "(or is not visible with these credentials)"
                )
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot open store {self.url!r}: {reason(exc)}") from exc

    def _bucket_visible(self, bucket: str) -> bool:
        """Whether ``bucket`` exists for these credentials; transient errors are retried.

        s3fs's ``exists(bucket)`` answers False when its probes fail for any reason (a 503 too),
        so on S3 a HEAD of the bucket comes first and only a 404 means "no such bucket".
        """
        fs = self.fs
        if self.protocol not in ("s3", "s3a"):
            return bool(fs.exists(bucket))

        def probe() -> bool:
            try:
                fs.call_s3("head_bucket", Bucket=bucket)
            except FileNotFoundError:
                return False
            except PermissionError:  # HeadBucket refused: s3fs also tries GetBucketLocation
                return bool(fs.exists(bucket))
            return True

        return self._retrying("open", "", probe)

    # -- create-once ----------------------------------------------------------------------------

    def _raw_create(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` if absent; raise FileExistsError if present (or backend errors).

        On S3 the object is tagged with the writer token of the ``create`` call running in this thread.
        """
        path = self._path(key)
        if self.local:
            self._local_create(path, data)
            return
        fs = self.fs
        if self.protocol in ("s3", "s3a"):
            # s3fs: PUT with If-None-Match: *
            fs.pipe_file(path, data, mode="create", Metadata={WRITER_META: getattr(_CALL, "token", "")})
        elif type(fs).__name__ == "MemoryFileSystem" or self.protocol == "memory":
            with _MEMORY_LOCK, fs.open(path, "xb") as f:
                f.write(data)
        else:
            with fs.open(path, "xb") as f:  # gcsfs: generation precondition; others as they implement it
                f.write(data)
        self._invalidate(path)

    def _local_create(self, path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        tmp = os.path.join(folder, f"{TMP_PREFIX}{os.path.basename(path)}-{uuid.uuid4().hex}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:  # the folder went since (evolve gc, a user): make it again
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                # NFS: a retransmitted LINK whose first reply was lost answers EEXIST although
                # it worked; the final name then is our inode.
                try:
                    ours = os.path.samestat(os.stat(tmp), os.stat(path))
                except OSError:
                    ours = False
                if not ours:
                    raise
            except OSError as exc:
                if exc.errno in _NO_HARD_LINKS:
                    raise StoreError(
                        f"{path}: this filesystem does not support hard links ({reason(exc)}); evolve "
                        "needs os.link for create-once on local/NFS stores (see `evolve doctor`)"
                    ) from exc
                raise
            _fsync_dir(folder)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _invalidate(self, path: str) -> None:
        if not self.local:
            try:
                self.fs.invalidate_cache(path)
            except Exception:  # noqa: BLE001, S110 - a cache we cannot clear is one we never filled
                pass

    def _writer(self, key: str) -> str | None:
        """The writer token an S3 object was created with ("" if none), None if the key is missing."""
        path = self._path(key)

        def head() -> str | None:
            try:
                return self.fs.metadata(path).get(WRITER_META, "")
            except FileNotFoundError:
                return None

        return self._retrying("check", key, head)

    def _create(self, key: str, data: bytes, mine: Callable[[bytes], bool] | None) -> bool:
        """The create-once loop: retries, then resolves "exists" by reading back.

        ``mine(existing)`` says whether the stored bytes are ours. Without it (plain
        ``create``): on S3 the object's writer token says; elsewhere "exists" means False
        unless an earlier attempt of this call failed ambiguously and the stored bytes
        equal ours.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"create({key!r}): data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        _check_key(key)
        token = _CALL.token = uuid.uuid4().hex
        ambiguous = False
        last: BaseException | None = None
        for attempt in range(self.retries):
            try:
                self._raw_create(key, data)
                return True
            except Exception as exc:
                kind = classify(exc)
                if kind == "fatal":
                    if isinstance(exc, StoreError):
                        raise
                    if (not isinstance(exc, OSError) and http_status(exc)[0] is None
                            and not is_backend_error(exc)):
                        raise
                    raise StoreError(f"create {self._where(key)}: {reason(exc)}") from exc
                last = exc
                if kind == "transient":
                    ambiguous = True
                    self._note("transient")
                    if attempt + 1 < self.retries:
                        self._sleep(attempt)
                    continue
            # "exists" or a conditional conflict: what is there now?
            ours = self._read_back(key, data, token, mine, ambiguous)
            if ours is None:  # 409 with the other write still in flight, or a GC delete: retry
                if attempt + 1 < self.retries:
                    self._sleep(attempt)
                continue
            self._note("read_back_ours" if ours else "read_back_theirs")
            return ours
        raise StoreError(
            f"create {self._where(key)}: gave up after {self.retries} attempts "
            f"({reason(last) if last else 'unknown error'})"
        ) from last

    def _read_back(self, key: str, data: bytes, token: str, mine: Callable[[bytes], bool] | None,
                   ambiguous: bool) -> bool | None:
        """After "exists": whether the stored object is ours; None if nothing is there (yet)."""
        self._invalidate(self._path(key))
        if mine is None and self.protocol in ("s3", "s3a"):
            writer = self._writer(key)
            return None if writer is None else writer == token
        existing = self.read_bytes(key)
        if existing is None:
            return None
        if mine is not None:
            return mine(existing)
        return ambiguous and existing == data

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if nothing is there: True if we created it, False if it existed."""
        return self._create(key, data, None)

    def create_blob(self, key: str, data: bytes) -> bool:
        """Create-once for content (weights): an existing identical blob counts as ours (True)."""
        data = bytes(data)
        return self._create(key, data, lambda existing: existing == data)

    def create_json(self, key: str, record: dict[str, Any]) -> bool:
        """Create-once a JSON record, stamped with a writer ``nonce`` (kept if the record has one).

        True if the stored record is ours (same nonce), False if another writer's.
        """
        return self.create_or_read_json(key, record)[0]

    def create_or_read_json(self, key: str, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """As :meth:`create_json`, with the other writer's record when it is theirs (always: it was
        read once, to tell whose it is, so a caller that needs it reads nothing more); None when ours."""
        seen: dict[str, Any] = {}
        if not isinstance(record, dict):
            raise TypeError(f"create_json({key!r}): record must be a dict, not {type(record).__name__}")
        nonce = record.get("nonce") or uuid.uuid4().hex
        stamped = {**record, "nonce": nonce}
        data = _encode(stamped)

        def mine(existing: bytes) -> bool:
            for attempt in range(self.retries):
                try:
                    other = json.loads(existing)
                except ValueError:
                    other = None
                if isinstance(other, dict):
                    seen["other"] = other
                    return other.get("nonce") == nonce
                # unreadable: records appear whole, so this is corruption or a backend glitch
                if attempt + 1 < self.retries:
                    self._sleep(attempt)
                    existing = self.read_bytes(key) or b""
            raise CorruptRecord(key, f"exists at {self.url} but does not parse, cannot tell whose it is")

        won = self._create(key, data, mine)
        return won, None if won else seen.get("other")

    # -- reads ------------------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None if it does not exist."""
        path = self._path(key)

        def read() -> bytes | None:
            try:
                if self.local:
                    with open(path, "rb") as f:
                        return f.read()
                if self.protocol in ("s3", "s3a"):
                    # one GET: s3fs otherwise sends a HEAD first to decide on a chunked parallel read
                    return self.fs.cat_file(path, max_concurrency=1)
                return self.fs.cat_file(path)
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                return None

        return self._retrying("read", key, read)

    def read_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at ``key``, None if missing; ``CorruptRecord`` if it is not a JSON object."""
        data = self.read_bytes(key)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError as exc:
            raise CorruptRecord(key, f"not JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise CorruptRecord(key, f"not a JSON object (a {type(record).__name__})")
        return record

    def exists(self, key: str) -> bool:
        path = self._path(key)

        def check() -> bool:
            if self.local:
                return os.path.isfile(path)
            self._invalidate(path)
            return bool(self.fs.exists(path))

        return self._retrying("check", key, check)

    # -- soft records and garbage collection --------------------------------------------------------

    def put_json(self, key: str, record: dict[str, Any]) -> None:
        """Replace a mutable "soft" record (heartbeats): atomic, but last writer wins. Not for correctness."""
        if not isinstance(record, dict):
            raise TypeError(f"put_json({key!r}): record must be a dict, not {type(record).__name__}")
        data = _encode(record)
        path = self._path(key)

        def put() -> None:
            if self.local:
                folder = os.path.dirname(path)
                os.makedirs(folder, exist_ok=True)
                tmp = os.path.join(folder, f"{TMP_PREFIX}{os.path.basename(path)}-{uuid.uuid4().hex}")
                try:
                    with open(tmp, "wb") as f:  # no fsync: a soft record lost in a crash costs nothing
                        f.write(data)
                    os.replace(tmp, path)
                finally:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
                return
            fs = self.fs
            if type(fs).__name__ == "MemoryFileSystem" or self.protocol == "memory":
                with _MEMORY_LOCK:
                    fs.pipe_file(path, data)
            else:
                fs.pipe_file(path, data)  # object stores: a PUT is all-or-nothing
            self._invalidate(path)

        self._retrying("write", key, put)

    def delete(self, key: str) -> None:
        """Remove ``key`` if present: garbage collection of weights only, never for correctness."""
        path = self._path(key)

        def rm() -> None:
            try:
                if self.local:
                    os.unlink(path)
                else:
                    self.fs.rm_file(path)
            except FileNotFoundError:
                pass
            self._invalidate(path)

        self._retrying("delete", key, rm)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix`` (a folder, ending in "/"); for scratch space such as doctor's."""
        if not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix.split("/") or prefix == "/":
            raise ValueError(f"delete_prefix needs a folder prefix like 'doctor/abc/', got {prefix!r}")
        if self.local:
            import shutil

            shutil.rmtree(os.path.join(self.root, *prefix.rstrip("/").split("/")), ignore_errors=True)
            return
        for key in self.list_keys(prefix):
            self.delete(key)
        base = f"{self.root}/{prefix.rstrip('/')}" if self.root else prefix.rstrip("/")
        try:
            if self.fs.isdir(base):
                self.fs.rm(base, recursive=True)
        except Exception:  # noqa: BLE001, S110 - leftover empty folders are harmless
            pass
        self._invalidate(base)
