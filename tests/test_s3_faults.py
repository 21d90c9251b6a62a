"""The store and the engine on S3 (moto's server) behind a proxy that injects faults (tests/faulty_s3.py):
requests failing with 503 SlowDown / 500 InternalError, replies lost after the write succeeded,
listings that lag behind writes.

Four layers retry below the engine: aiohttp (once, silently, an idempotent request such as a PUT
whose reused connection closed without a reply), botocore (legacy mode: 5 attempts, ``rand * 2**n``
seconds apart), s3fs (SlowDown and connection errors, 5 calls) and the store (6 attempts). A lost reply
of a conditional PUT is retried below the store, which then sees only a 412 caused by its own first
attempt and must read back to learn that the write was its own. With
``config_kwargs={"retries": {"total_max_attempts": 1}}`` botocore does not retry, and every 500 reaches
the store. ``Store.outcomes`` and ``FaultyS3.counts`` show which layer handled what.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from faulty_s3 import FaultyS3
from test_store import moto_endpoint  # noqa: F401 - the session's moto server (a fixture)
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.config import build_config
from evolve.runner.launch import open_run, run_in_process, total_steps
from evolve.store.backend import Store, StoreError
from evolve.store.check import check_store
from evolve.store.doctor import doctor

SECRET = f"evolve-test-secret-{uuid.uuid4().hex}"
NO_BOTOCORE_RETRIES = {"config_kwargs": {"retries": {"total_max_attempts": 1}}}
BOTOCORE_ATTEMPTS = 3  # scripted faults: botocore gives up sooner than after its default 5 (15 s of backoff)
FEWER_BOTOCORE_RETRIES = {"config_kwargs": {"retries": {"total_max_attempts": BOTOCORE_ATTEMPTS}}}


def options(endpoint: str, **extra: Any) -> dict[str, Any]:
    """Storage options as a user's config gives them: credentials and endpoint, no environment needed."""
    return {"client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            "key": "AKIDEVOLVETEST", "secret": SECRET, **extra}


@pytest.fixture
def bucket(moto_endpoint) -> str:  # noqa: F811
    name = f"evolve-{uuid.uuid4().hex[:20]}"
    moto_endpoint[1].create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto_endpoint):  # noqa: F811
    with FaultyS3(moto_endpoint[0], seed=7) as faulty:
        yield faulty


def open_store(proxy: FaultyS3, bucket: str, **extra: Any) -> Store:
    store = Store.open(f"s3://{bucket}/run", options(proxy.endpoint, **extra), create=True)
    store.backoff = 0.005
    return store


# -- the store: one ambiguous write at a time, scripted ---------------------------------------------

# what the requests of one create meet, and which layer resolves it
SCRIPTS = {
    # aiohttp (or botocore) sends the PUT again and hands the store a 412 from its own first attempt,
    # with nothing in it to say that an earlier attempt was made
    "lost reply": ("lose",),
    # botocore gives up on SlowDown; s3fs retries the whole call and meets the 412
    "lost reply, then SlowDown": ("lose",) + ("SlowDown",) * BOTOCORE_ATTEMPTS,
    # botocore gives up on InternalError and s3fs passes it on: the store retries and meets the 412
    "lost reply, then InternalError": ("lose",) + ("InternalError",) * (BOTOCORE_ATTEMPTS + 1),
}


def create(store: Store, method: str, key: str, writer: int) -> bool:
    if method == "create_json":
        return store.create_json(key, {"writer": writer})
    return getattr(store, method)(key, f"writer {writer}".encode())


def stored_writer(store: Store, method: str, key: str) -> int:
    if method == "create_json":
        return store.read_json(key)["writer"]
    return int(store.read_bytes(key).decode().split()[1])


@pytest.mark.parametrize(("method", "script"), [
    *((method, script) for method in ("create_json", "create") for script in SCRIPTS),
    ("create_blob", "lost reply"),
])
def test_lost_reply_is_ours_and_a_second_writer_loses(proxy, bucket, method, script) -> None:
    store = open_store(proxy, bucket, **FEWER_BOTOCORE_RETRIES)
    key = f"claims/{method}.json"
    proxy.script(*SCRIPTS[script])
    assert create(store, method, key, writer=1) is True
    assert proxy.scripted == 0 and proxy.counts["lost_replies"] == 1
    assert store.outcomes["read_back_ours"] == 1, store.outcomes  # the 412 reached the store's read-back
    if "InternalError" in script:
        assert store.outcomes["transient"] >= 1, store.outcomes

    second = open_store(proxy, bucket)
    assert create(second, method, key, writer=2) is False
    assert second.outcomes["read_back_theirs"] == 1
    assert stored_writer(second, method, key) == 1


def test_plain_create_of_identical_bytes_by_another_writer_is_theirs(proxy, bucket) -> None:
    """Plain create has no nonce: after a lost reply only the writer token tells identical writes apart."""
    first, second = open_store(proxy, bucket), open_store(proxy, bucket)
    proxy.script("lose")
    assert first.create("doctor/probe.bin", b"same bytes") is True
    proxy.script("lose")
    assert second.create("doctor/probe.bin", b"same bytes") is False  # its PUT was refused: never landed
    assert second.create_blob("doctor/probe.bin", b"same bytes") is True  # blobs: identical content is ours


def test_doctor_is_not_fooled_by_lost_replies(proxy, bucket) -> None:
    """`evolve doctor` (which every `evolve run` runs first) probes create-once with plain creates: a lost
    reply of its first one must not read as "this backend says exists to a fresh key"."""
    store = open_store(proxy, bucket)
    proxy.script("lose-create", "lose-create")  # its blob write, then the create-once probe's first writer
    report = doctor(store)
    assert report.ok, str(report)
    assert proxy.counts["lost_replies:create"] == 2 and proxy.scripted == 0, proxy.counts
    assert store.outcomes["read_back_ours"] == 2, store.outcomes


def test_doctor_accepts_lagging_listings_and_says_so(proxy, bucket) -> None:
    """Listings that lag behind writes are tolerated (views are never trusted for correctness), not refused."""
    store = open_store(proxy, bucket)
    proxy.listing_lag = 0.5
    report = doctor(store)
    assert report.ok, str(report)
    assert "listings lag" in str(report), str(report)
    assert proxy.counts["lagged_listings"] >= 1, proxy.counts


def test_errors_while_opening_are_not_a_missing_bucket(proxy, bucket) -> None:
    """s3fs's exists(bucket) answers False on any error of its two probes: a 500 is not "no such bucket"."""
    proxy.script("InternalError", "InternalError")
    store = Store.open(f"s3://{bucket}/run", options(proxy.endpoint, **NO_BOTOCORE_RETRIES), create=True)
    assert proxy.scripted == 0 and proxy.counts["failed:InternalError"] == 2
    assert store.outcomes["transient"] >= 1, store.outcomes
    with pytest.raises(StoreError, match="bucket 'evolve-no-such-bucket' does not exist"):
        Store.open("s3://evolve-no-such-bucket/run", options(proxy.endpoint), create=True)


def test_store_retries_are_bounded_and_name_the_key(proxy, bucket) -> None:
    """With botocore's retries off, each InternalError reaches the store: six attempts, then one line."""
    store = open_store(proxy, bucket, **NO_BOTOCORE_RETRIES)
    proxy.script(*["InternalError"] * store.retries)
    with pytest.raises(StoreError, match=f"gave up after {store.retries} attempts") as info:
        store.create_json("claims/000000000003.json", {"step": 3})
    message = str(info.value)
    assert "claims/000000000003.json" in message and "\n" not in message and SECRET not in message
    assert proxy.counts["failed:InternalError"] == store.retries and proxy.scripted == 0
    assert store.outcomes["transient"] == store.retries
    assert store.create_json("claims/000000000003.json", {"step": 3}) is True  # nothing landed before


@pytest.mark.parametrize("retries", ["botocore retries", "store retries"])
def test_racing_writers_through_faults_one_winner_per_key(proxy, bucket, retries) -> None:
    """Four writers race on every key (create_json, create, create_blob by turns) through failures and lost
    replies: exactly one winner per key, holding the winner's record."""
    writers, keys = 4, 45
    extra = NO_BOTOCORE_RETRIES if retries == "store retries" else FEWER_BOTOCORE_RETRIES
    stores = [open_store(proxy, bucket, **extra) for _ in range(writers)]
    methods = ["create_json", "create", "create_blob"]
    proxy.fail_rate, proxy.lost_reply_rate = 0.1, 0.3  # a lost reply needs a PUT that succeeds: 1 in 4
    barrier = threading.Barrier(writers)
    won: dict[int, list[int]] = {w: [] for w in range(writers)}
    errors: list[BaseException] = []

    def contender(w: int) -> None:
        try:
            barrier.wait(timeout=60)
            won[w] = [k for k in range(keys) if create(stores[w], methods[k % 3], f"race/{k:03d}", w)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    proxy.quiet()
    winners = {k: [w for w in range(writers) if k in won[w]] for k in range(keys)}
    assert all(len(ws) == 1 for ws in winners.values()), {k: ws for k, ws in winners.items() if len(ws) != 1}
    check = stores[0]
    for k, (w,) in winners.items():
        assert stored_writer(check, methods[k % 3], f"race/{k:03d}") == w
    outcomes = sum((s.outcomes for s in stores), start=Counter())
    detail = f"proxy {dict(proxy.counts)}, store {dict(outcomes)}"
    assert proxy.counts["failed"] >= 10 and proxy.counts["lost_replies:create"] >= 5, detail
    # every lost reply reached the store as "exists" and was read back as ours; every loser read back once
    assert outcomes["read_back_ours"] == proxy.counts["lost_replies:create"], detail
    assert outcomes["read_back_theirs"] == keys * (writers - 1), detail
    if retries == "store retries":
        assert outcomes["transient"] >= 5, detail


# -- the engine: a whole run with every fault on at once ------------------------------------------------


@pytest.mark.slow
def test_run_through_failures_lost_replies_and_lagging_listings(proxy, bucket) -> None:
    """A whole run through every fault at once. botocore's retries are off, so the faults reach the
    engine's own logic (and the run is not spent in botocore's seconds-long backoff): every 500 is
    retried by the store, every lost reply of a create is read back as ours."""
    lag = 0.5
    config = build_config({
        "store": f"s3://{bucket}/run", "storage_options": options(proxy.endpoint, **NO_BOTOCORE_RETRIES),
        "fitness": "synthetic", "population": 8, "steps": 100, "workers": 3,
        "refresh_seconds": 0.2, "lease_seconds": 3.0,
    })
    proxy.fail_rate, proxy.lost_reply_rate = 0.1, 0.05
    # `evolve doctor` (run by open_run) refuses a store whose fresh writes are missing from listings,
    # so the listings start lagging once the run is open
    store, config, space = open_run(config)
    store.backoff = 0.01  # the workers share this store; its retries need not wait long on a local server
    proxy.listing_lag = lag
    started = time.monotonic()
    results = run_in_process(store, config, space)
    elapsed = time.monotonic() - started
    total = total_steps(config)

    done = sorted(s for r in results for s in r["steps_done"])
    assert done == list(range(total)), "every step's child is credited to exactly one worker"
    time.sleep(lag)  # eventual consistency: the listing catches up
    report = check_store(store, config.population, total)
    assert report.ok, report.violations
    assert report.individuals == total and report.live == config.population and report.finished

    counts, outcomes = proxy.counts, store.outcomes
    detail = f"{elapsed:.1f}s, proxy {dict(counts)}, store {dict(outcomes)}"
    assert counts["failed:SlowDown"] >= 30 and counts["failed:InternalError"] >= 30, detail
    assert counts["lost_replies"] >= 8 and counts["lagged_listings"] >= 20, detail
    assert outcomes["transient"] >= 20, detail
    assert outcomes["read_back_ours"] == counts["lost_replies:create"] >= 4, detail


# -- credentials never leak ------------------------------------------------------------------------------


def test_secret_never_printed_nor_stored(proxy, bucket, moto_endpoint, tmp_path, caplog):  # noqa: F811
    """Key, secret and endpoint come from the config's storage_options (for `run`) and, since the other
    commands take no storage options, from the standard AWS environment variables. No output, log
    line, stored object or exported file may contain the secret."""
    import s3fs

    runner = CliRunner()
    outputs: list[str] = []

    def evolve(*args: str, env: dict[str, str] | None = None) -> Any:
        result = runner.invoke(app, list(args), env=env)
        outputs.append(result.output + result.stderr)
        assert "Traceback" not in outputs[-1], outputs[-1]
        return result

    def config_file(store: str) -> str:
        path = tmp_path / f"{uuid.uuid4().hex}.json"
        path.write_text(json.dumps({"store": store, "storage_options": options(proxy.endpoint),
                                    "fitness": "synthetic", "population": 4, "steps": 6, "workers": 2,
                                    "lease_seconds": 3.0, "refresh_seconds": 0.1}))
        return str(path)

    env = {"AWS_ACCESS_KEY_ID": "AKIDEVOLVETEST", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL_S3": proxy.endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    url = f"s3://{bucket}/run"
    proxy.fail_rate, proxy.lost_reply_rate = 0.05, 0.05
    try:
        with caplog.at_level("WARNING"):
            started = evolve("run", "--config", config_file(url), "--executor", "local")
            assert started.exit_code == 0, outputs[-1]
            for command in (["status", url], ["check", url], ["best", url], ["lineage", url],
                            ["export", url, str(tmp_path / "run.parquet")]):
                assert evolve(*command, env=env).exit_code == 0, outputs[-1]
            proxy.quiet()
            missing = evolve("run", "--config", config_file("s3://evolve-no-such-bucket/run"),
                             "--executor", "local")
            assert missing.exit_code == 2 and "evolve-no-such-bucket" in missing.stderr, outputs[-1]
            assert evolve("status", "s3://evolve-no-such-bucket/run", env=env).exit_code == 2
            proxy.script(*["InternalError"] * Store.retries)
            failing = evolve("check", url, env=env)
            assert failing.exit_code == 2 and "gave up after" in failing.stderr, outputs[-1]
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # the env-configured filesystem points at this proxy

    printed = "\n".join(outputs + [r.getMessage() for r in caplog.records])
    assert "10/10 individuals" in printed and "ok (finished)" in printed  # the commands really ran
    assert SECRET not in printed
    client = moto_endpoint[1]
    for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
        body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        assert SECRET.encode() not in body, f"the secret is stored in {item['Key']}"
    assert SECRET.encode() not in (tmp_path / "run.parquet").read_bytes()
