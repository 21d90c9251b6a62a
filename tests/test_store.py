"""The store's contract, written once (``StoreContract``) and run against every backend:
a local folder (``file://``), ``memory://`` and S3 (s3fs against moto's server).

The race (32 writers on the same keys) is what the whole engine stands on: exactly one
winner per key, and the key holds the winner's record.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import random
import shutil
import socket
import threading
import time
import uuid
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.store.backend import CorruptRecord, Store, StoreError
from evolve.store.doctor import doctor, require_healthy
from evolve.store.keys import PAD, RUN_KEY, claim_key, death_key, individual_key, step_of, weights_key

RACE_PROCESSES = 32
RACE_KEYS = 1000
# the S3 race goes through moto (a single Python process answering HTTP) on whatever cores this box has:
# the full 32 x 1000 race takes minutes there. EVOLVE_S3_FULL_RACE=0 races 32 x EVOLVE_S3_RACE_KEYS
# (60) instead, while iterating; CI runs the full one.
S3_RACE_KEYS = int(os.environ.get("EVOLVE_S3_RACE_KEYS", "60"))
FULL_S3_RACE = os.environ.get("EVOLVE_S3_FULL_RACE", "1") not in ("", "0")


# -- the race's contender (module level: child processes import it) -------------------------------


def race_contender(
    url: str, options: dict[str, Any], worker: int, keys: int, barrier: Any, results: Any
) -> None:
    """Open our own Store from the URL, then race create_json on keys 0..keys-1 (same order for all)."""
    try:
        store = Store(url, options)
        store.list_keys("race/")  # open the filesystem (connections, imports) before the start line
        barrier.wait(timeout=300)
        won = [
            k for k in range(keys) if store.create_json(f"race/{k:06d}.json", {"worker": worker, "key": k})
        ]
        results.put((worker, won, None))
    except BaseException as exc:  # noqa: BLE001 - report, never hang the parent
        results.put((worker, [], f"{type(exc).__name__}: {exc}"))


def _process_context() -> multiprocessing.context.BaseContext:
    """forkserver (children fork from a server that already imported the store and s3fs), else spawn."""
    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "evolve.store.backend", "s3fs"])
        return ctx
    except ValueError:
        return multiprocessing.get_context("spawn")


def run_race(
    url: str, options: dict[str, Any], processes: int, keys: int, use_threads: bool
) -> dict[int, list[int]]:
    """Every contender's won keys; fails on any contender error."""
    if use_threads:
        import queue

        barrier: Any = threading.Barrier(processes)
        results: Any = queue.Queue()
        runners = [
            threading.Thread(target=race_contender, args=(url, options, w, keys, barrier, results))
            for w in range(processes)
        ]
    else:
        ctx = _process_context()
        barrier = ctx.Barrier(processes)
        results = ctx.Queue()
        runners = [
            ctx.Process(target=race_contender, args=(url, options, w, keys, barrier, results))
            for w in range(processes)
        ]
    for r in runners:
        r.start()
    outcome: dict[int, list[int]] = {}
    errors = []
    for _ in runners:
        worker, won, error = results.get(timeout=600)
        outcome[worker] = won
        if error:
            errors.append(f"contender {worker}: {error}")
    for r in runners:
        r.join(timeout=60)
    assert not errors, errors
    return outcome


# -- backends ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3_server() -> Any:
    """moto's S3 app in a threaded werkzeug server, conditional PUTs decided atomically as S3 does
    (``bench.common.moto_s3_app``: moto alone can let two racing creates of one key both win).

    ``ThreadedMotoServer`` works out per request which of moto's ~200 services a request is for;
    serving S3 alone is the same S3 API at about two thirds of the server's CPU, which is what the
    32-process race is bound by on 2 cores.
    """
    from werkzeug.serving import make_server

    from bench.common import moto_s3_app

    return make_server("127.0.0.1", _free_port(), moto_s3_app(), threaded=True)


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto S3 server for the session; it must honour If-None-Match: * or every S3 test fails."""
    import boto3
    from botocore.exceptions import ClientError
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = _s3_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # moto's servers in one process share their buckets: another module's instance of this fixture
    # may have probed already, so each probe uses a bucket of its own
    probe = f"evolve-probe-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=probe)
    client.put_object(Bucket=probe, Key="k", Body=b"first", IfNoneMatch="*")
    try:
        client.put_object(Bucket=probe, Key="k", Body=b"second", IfNoneMatch="*")
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412, exc.response
    else:
        pytest.fail(
            "this moto server ignores If-None-Match: * (a conditional PUT overwrote): "
            "S3 create-once cannot be tested against it; use moto >= 5.0",
            pytrace=False,
        )
    assert client.get_object(Bucket=probe, Key="k")["Body"].read() == b"first"
    yield endpoint, client
    server.shutdown()


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        "key": "testing",
        "secret": "testing",
    }


JSON_RECORDS = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != "nonce"),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
    max_size=5,
)


class StoreContract:
    """What every backend must do. Subclasses provide the ``url`` fixture (a fresh, empty store)."""

    cross_process = True  # can separate processes share this backend?
    race_keys = RACE_KEYS

    @pytest.fixture
    def options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def store(self, url: str, options: dict[str, Any]) -> Store:
        store = Store.open(url, options, create=True)
        store.backoff = 0.001  # keep retry tests fast
        return store

    # -- create-once --------------------------------------------------------------------------

    def test_create_once_first_writer_wins(self, store: Store) -> None:
        key = individual_key(7)
        assert store.create(key, b"first") is True
        assert store.create(key, b"second") is False
        assert store.create(key, b"first") is False  # same bytes, no ambiguity: still "it existed"
        assert store.read_bytes(key) == b"first"
        assert store.exists(key)

    def test_create_json_stamps_a_nonce(self, store: Store) -> None:
        record = {"step": 3, "worker": "w"}
        assert store.create_json(claim_key(3), record) is True
        stored = store.read_json(claim_key(3))
        assert stored["step"] == 3 and stored["worker"] == "w"
        assert isinstance(stored["nonce"], str) and len(stored["nonce"]) == 32
        assert "nonce" not in record  # the caller's dict is left alone
        assert store.create_json(claim_key(3), record) is False  # a fresh nonce: another writer

    def test_create_json_lost_reply_is_resolved_by_nonce(self, store: Store) -> None:
        mine = {"step": 5, "nonce": "a" * 32}
        assert store.create_json(death_key(5), mine) is True
        # the reply was lost and the client retried: same record, same nonce -> it was ours
        assert store.create_json(death_key(5), dict(mine)) is True
        # a different writer of the same key -> theirs
        assert store.create_json(death_key(5), {"step": 5, "nonce": "b" * 32}) is False
        assert store.read_json(death_key(5))["nonce"] == "a" * 32

    def test_create_or_read_json_hands_back_the_other_writers_record(self, store: Store) -> None:
        won, theirs = store.create_or_read_json(death_key(6), {"step": 6, "killed_at_step": 40, "by": "a"})
        assert won and theirs is None
        reads = []
        real = store.read_bytes
        store.read_bytes = lambda key: reads.append(key) or real(key)
        won, theirs = store.create_or_read_json(death_key(6), {"step": 6, "killed_at_step": 41, "by": "b"})
        assert not won and theirs["killed_at_step"] == 40 and theirs["by"] == "a"
        assert reads == [death_key(6)]  # read once, to tell whose it is: nothing more to read after
        assert theirs == store.read_json(death_key(6))
        assert store.create_or_read_json(death_key(6), dict(store.read_json(death_key(6)))) == (True, None)

    def test_transient_failure_after_landing_counts_as_ours(self, store: Store) -> None:
        """A create that lands but whose reply times out, retried: "exists" must resolve to True."""
        real = store._raw_create
        calls = []

        def lossy(key: str, data: bytes) -> None:
            calls.append(key)
            if len(calls) == 1:
                real(key, data)
                raise TimeoutError("reply lost")
            real(key, data)

        store._raw_create = lossy
        assert store.create_json(claim_key(9), {"step": 9}) is True
        calls.clear()
        assert store.create_blob(weights_key(9), b"\x00weights") is True
        calls.clear()
        assert store.create("plain/after-timeout.bin", b"bytes") is True  # ambiguous + same bytes
        assert store.read_json(claim_key(9))["step"] == 9

    def test_transient_failure_then_someone_elses_record(self, store: Store) -> None:
        assert store.create_json(claim_key(11), {"step": 11, "worker": "them"}) is True
        real = store._raw_create
        calls = []

        def flaky(key: str, data: bytes) -> None:
            calls.append(key)
            if len(calls) == 1:
                raise ConnectionError("connection reset")
            real(key, data)

        store._raw_create = flaky
        assert store.create_json(claim_key(11), {"step": 11, "worker": "me"}) is False
        assert store.read_json(claim_key(11))["worker"] == "them"

    def test_conflict_409_is_read_back_and_retried(self, store: Store) -> None:
        """A 409 (a concurrent conditional write in flight) with nothing there yet: retry the create."""
        real = store._raw_create
        calls = []

        class Conflict(OSError):
            response: ClassVar[dict[str, Any]] = {
                "ResponseMetadata": {"HTTPStatusCode": 409},
                "Error": {"Code": "ConditionalRequestConflict"},
            }

        def conflicted(key: str, data: bytes) -> None:
            calls.append(key)
            if len(calls) <= 2:
                raise Conflict(5, "conflict")
            real(key, data)

        store._raw_create = conflicted
        assert store.create_json(claim_key(12), {"step": 12}) is True
        assert len(calls) == 3

    def test_transient_failures_are_bounded(self, store: Store) -> None:
        def down(key: str, data: bytes) -> None:
            raise OSError(5, "I/O error")

        store._raw_create = down
        state = random.getstate()
        with pytest.raises(StoreError, match="gave up after") as info:
            store.create_json(claim_key(13), {"step": 13})
        assert "claims/000000000013.json" in str(info.value) and "\n" not in str(info.value)
        assert random.getstate() == state  # backoff jitter never disturbs a seeded global random

    def test_create_blob_compares_bytes(self, store: Store) -> None:
        key = weights_key(4, "abc123")
        assert store.create_blob(key, b"weights") is True
        assert store.create_blob(key, b"weights") is True  # identical content: as good as ours
        assert store.create_blob(key, b"other") is False
        assert store.read_bytes(key) == b"weights"

    def test_create_json_over_an_unreadable_record(self, store: Store) -> None:
        store.create(claim_key(14), b"{half a rec")
        with pytest.raises(CorruptRecord, match="claims/000000000014.json"):
            store.create_json(claim_key(14), {"step": 14})

    # -- reads --------------------------------------------------------------------------------

    def test_missing_reads_none(self, store: Store) -> None:
        assert store.read_json(individual_key(1)) is None
        assert store.read_bytes(individual_key(1)) is None
        assert not store.exists(individual_key(1))
        assert store.list_keys("individuals/") == []

    def test_corrupt_record_names_its_key(self, store: Store) -> None:
        key = individual_key(42)
        store.create(key, b'{"genome": [1, 2')
        with pytest.raises(CorruptRecord, match="individuals/000000000042.json") as info:
            store.read_json(key)
        assert info.value.key == key
        assert isinstance(info.value, StoreError)

    def test_json_that_is_not_an_object_is_corrupt(self, store: Store) -> None:
        store.create(individual_key(43), b"[1, 2, 3]")
        with pytest.raises(CorruptRecord, match="not a JSON object"):
            store.read_json(individual_key(43))

    def test_list_keys_sees_a_fresh_write(self, store: Store) -> None:
        assert store.list_keys("individuals/") == []  # primes any listing cache
        store.create_json(individual_key(2), {"step": 2})
        assert store.list_keys("individuals/") == [individual_key(2)]
        store.create_json(individual_key(1), {"step": 1})
        assert store.list_keys("individuals/") == [individual_key(1), individual_key(2)]

    def test_list_keys_prefixes(self, store: Store) -> None:
        for key in [
            "individuals/000000000010.json",
            "individuals/000000000002.json",
            "deaths/000000000002.json",
            "adoptions/000000000005-000.json",
            "adoptions/000000000005-001.json",
            "adoptions/000000000050-000.json",
            RUN_KEY,
        ]:
            store.create_json(key, {})
        assert store.list_keys("individuals/") == [
            "individuals/000000000002.json",
            "individuals/000000000010.json",
        ]
        assert store.list_keys("adoptions/000000000005-") == [
            "adoptions/000000000005-000.json",
            "adoptions/000000000005-001.json",
        ]
        assert store.list_keys("run") == [RUN_KEY]
        assert len(store.list_keys("")) == 7
        assert store.list_keys("nothing/") == []

    def test_list_names_is_one_folder_fresh(self, store: Store) -> None:
        assert store.list_names("log/000000000/") == set()
        for key in ["log/000000000/000000000001.c", "log/000000000/000000000002.c", "log/000000001/000000000500.c"]:
            store.put_json(key, {})
        names = {n for n in store.list_names("log/000000000/") if not n.startswith(".tmp-")}
        assert names == {"000000000001.c", "000000000002.c"}
        assert {k for k in store.list_folder("log/000000000/")} == {"log/000000000/" + n for n in names}

    def test_put_json_replaces(self, store: Store) -> None:
        store.put_json("heartbeats/000000000001.json", {"seq": 1})
        store.put_json("heartbeats/000000000001.json", {"seq": 2})
        assert store.read_json("heartbeats/000000000001.json") == {"seq": 2}
        assert store.list_keys("heartbeats/") == ["heartbeats/000000000001.json"]

    def test_put_json_is_never_seen_half_written(self, store: Store) -> None:
        key = "heartbeats/000000000002.json"
        store.put_json(key, {"seq": -1, "pad": ""})
        stop = threading.Event()
        seen: list[Any] = []

        def reader() -> None:
            while not stop.is_set():
                try:
                    seen.append(store.read_json(key)["seq"])
                except Exception as exc:  # noqa: BLE001 - a torn write would show up here
                    seen.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for seq in range(60):
                store.put_json(key, {"seq": seq, "pad": "x" * 50_000})
        finally:
            stop.set()
            thread.join()
        assert seen and all(isinstance(s, int) for s in seen), [s for s in seen if not isinstance(s, int)][:3]
        assert store.read_json(key)["seq"] == 59

    def test_delete(self, store: Store) -> None:
        key = weights_key(3)
        store.create(key, b"w")
        store.delete(key)
        assert store.read_bytes(key) is None and store.list_keys("weights/") == []
        store.delete(key)  # missing is fine

    def test_json_round_trip(self, store: Store) -> None:
        """Any JSON object comes back as written, plus its nonce (a property, per backend)."""

        # built inside the test: one hypothesis test per backend, not one method shared by three classes
        @settings(max_examples=15, deadline=None)
        @given(record=JSON_RECORDS)
        def round_trip(record: dict[str, Any]) -> None:
            key = f"roundtrip/{uuid.uuid4().hex}.json"
            assert store.create_json(key, record)
            stored = store.read_json(key)
            assert stored.pop("nonce")
            assert stored == record

        round_trip()

    # -- opening and pickling -------------------------------------------------------------------

    def test_open_existing_requires_run_json(self, store: Store, options: dict[str, Any]) -> None:
        with pytest.raises(StoreError, match=r"run.json missing"):
            Store.open(store.url, options, create=False)
        store.create_json(RUN_KEY, {"schema": 1})
        assert Store.open(store.url, options, create=False).read_json(RUN_KEY)["schema"] == 1

    def test_pickles_without_its_filesystem(self, store: Store) -> None:
        store.create_json(individual_key(0), {"step": 0})
        state = store.__getstate__()
        assert state["_fs"] is None
        clone = pickle.loads(pickle.dumps(store))
        assert clone.url == store.url
        assert clone.read_json(individual_key(0))["step"] == 0

    # -- the race ----------------------------------------------------------------------------------

    def _race(self, store: Store, options: dict[str, Any], processes: int, keys: int) -> None:
        start = time.perf_counter()
        outcome = run_race(store.url, options, processes, keys, use_threads=not self.cross_process)
        elapsed = time.perf_counter() - start
        winners: dict[int, list[int]] = {}
        for worker, won in outcome.items():
            for k in won:
                winners.setdefault(k, []).append(worker)
        total = sum(len(won) for won in outcome.values())
        doubles = {k: w for k, w in winners.items() if len(w) > 1}
        assert not doubles, f"keys with several winners: {dict(list(doubles.items())[:5])}"
        assert total == keys and sorted(winners) == list(range(keys))
        for k, (worker,) in winners.items():
            record = store.read_json(f"race/{k:06d}.json")
            assert record["worker"] == worker and record["key"] == k, (k, record, worker)
        assert len(store.list_keys("race/")) == keys
        print(
            f"\n[race] {type(self).__name__}: {processes} {'processes' if self.cross_process else 'threads'}"
            f" x {keys} keys: {elapsed:.1f}s"
        )

    def test_race_exactly_one_winner_per_key(self, store: Store, options: dict[str, Any]) -> None:
        self._race(store, options, RACE_PROCESSES, self.race_keys)

    # -- doctor ------------------------------------------------------------------------------------

    def test_doctor_passes(self, store: Store) -> None:
        report = doctor(store)
        assert report.ok, str(report)
        assert report.protocol == store.protocol and "fsspec" in report.versions
        assert {c.name for c in report.checks} >= {
            "create-once refuses a second writer",
            "create-once race (8 threads)",
            "fresh writes are visible",
            "store is writable and readable",
        }
        assert not [k for k in store.list_keys("") if k.startswith("doctor/")]  # scratch cleaned up
        assert require_healthy(store).ok


class TestLocalStore(StoreContract):
    @pytest.fixture
    def url(self, tmp_path) -> str:
        return f"file://{tmp_path}/store"

    def test_url_is_absolute(self, tmp_path, monkeypatch) -> None:
        monkeypatch.chdir(tmp_path)
        store = Store.open("runs/demo", create=True)  # parents are created, like `mkdir -p`
        assert store.url == str(tmp_path / "runs" / "demo") and os.path.isdir(store.url)
        assert Store(f"file://{tmp_path}/x").url == str(tmp_path / "x")

    def test_hard_link_mechanics_leave_no_temp_files(self, store: Store) -> None:
        store.create_json(individual_key(1), {"step": 1})
        store.create_json(individual_key(1), {"step": 1})
        store.put_json("heartbeats/000000000001.json", {"seq": 1})
        names = os.listdir(os.path.join(store.root, "individuals")) + os.listdir(
            os.path.join(store.root, "heartbeats")
        )
        assert sorted(names) == ["000000000001.json", "000000000001.json"]
        assert os.stat(os.path.join(store.root, "individuals", "000000000001.json")).st_nlink == 1

    def test_a_folder_removed_after_a_create_is_made_again(self, store: Store) -> None:
        assert store.create_json("weights/000000000001-a.json", {"step": 1})
        shutil.rmtree(os.path.join(store.root, "weights"))  # evolve gc, or a user, emptied it
        assert store.create_json("weights/000000000002-b.json", {"step": 2})
        assert store.list_keys("weights/") == ["weights/000000000002-b.json"]

    def test_crash_leftover_temp_files_are_not_keys(self, store: Store) -> None:
        os.makedirs(os.path.join(store.root, "individuals"))
        with open(os.path.join(store.root, "individuals", ".tmp-000000000003.json-dead"), "wb") as f:
            f.write(b'{"half')
        assert store.list_keys("individuals/") == []
        assert store.create_json(individual_key(3), {"step": 3})
        assert store.list_keys("individuals/") == [individual_key(3)]

    def test_nfs_lost_link_reply_is_ours(self, store: Store, monkeypatch) -> None:
        """NFS can answer EEXIST to a retransmitted LINK that worked: the final name is then our inode."""
        real_link = os.link

        def retransmitted(src: str, dst: str) -> None:
            real_link(src, dst)
            raise FileExistsError(17, "File exists", dst)

        monkeypatch.setattr(os, "link", retransmitted)
        assert store.create(individual_key(5), b"mine") is True
        monkeypatch.setattr(os, "link", real_link)
        assert store.read_bytes(individual_key(5)) == b"mine"

    def test_no_hard_links_is_a_clear_error(self, store: Store, monkeypatch) -> None:
        def unsupported(src: str, dst: str) -> None:
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(os, "link", unsupported)
        with pytest.raises(StoreError, match="hard links"):
            store.create(individual_key(6), b"x")
        report = doctor(store)
        assert not report.ok
        assert report.failures[0].name == "hard links (os.link)"
        with pytest.raises(StoreError, match="hard links"):
            require_healthy(store)

    def test_missing_parent_folder(self, tmp_path) -> None:
        url = str(tmp_path / "no" / "such" / "store")
        with pytest.raises(StoreError, match=r"no evolve run at .*no/such/store.*does not exist") as info:
            Store.open(url, create=False)
        assert "\n" not in str(info.value)

    def test_existing_folder_without_a_run(self, tmp_path) -> None:
        with pytest.raises(StoreError, match=r"run.json missing"):
            Store.open(str(tmp_path), create=False)

    def test_unwritable_location(self, tmp_path) -> None:
        (tmp_path / "afile").write_text("not a folder")
        url = str(tmp_path / "afile" / "store")
        with pytest.raises(StoreError, match="afile/store") as info:
            Store.open(url, create=True)
        assert "\n" not in str(info.value)
        with pytest.raises(StoreError, match="afile/store"):
            Store.open(url, create=False)
        with pytest.raises(StoreError, match="is a file"):
            Store.open(str(tmp_path / "afile"), create=True)


class TestMemoryStore(StoreContract):
    cross_process = False  # memory:// is per process: the race runs in 32 threads instead

    @pytest.fixture
    def url(self):
        url = f"memory://evolve-test-{uuid.uuid4().hex}"
        yield url
        fs = fsspec.filesystem("memory")
        root = fs._strip_protocol(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        assert not [p for p in list(MemoryFileSystem.store) if p.startswith(root + "/")]


class TestS3Store(StoreContract):
    race_keys = RACE_KEYS if FULL_S3_RACE else S3_RACE_KEYS

    @pytest.fixture
    def options(self, moto_endpoint) -> dict[str, Any]:
        return s3_options(moto_endpoint[0])

    @pytest.fixture
    def url(self, moto_endpoint) -> str:
        bucket = f"evolve-{uuid.uuid4().hex[:20]}"
        moto_endpoint[1].create_bucket(Bucket=bucket)
        return f"s3://{bucket}/run"

    def test_missing_bucket(self, moto_endpoint) -> None:
        with pytest.raises(StoreError, match="bucket 'evolve-no-such-bucket' does not exist"):
            Store.open("s3://evolve-no-such-bucket/run", s3_options(moto_endpoint[0]), create=True)

    def test_create_uses_a_conditional_put(self, store: Store, moto_endpoint) -> None:
        """Against the raw S3 API: our create refuses to overwrite an object someone else PUT."""
        bucket = store.root.split("/", 1)[0]
        moto_endpoint[1].put_object(Bucket=bucket, Key="run/claims/000000000001.json", Body=b'{"nonce":"x"}')
        assert store.create_json(claim_key(1), {"step": 1}) is False
        assert store.read_json(claim_key(1)) == {"nonce": "x"}


# -- a backend that lies: "xb" silently overwrites (s3fs < 2025.7, servers ignoring If-None-Match) ------


class OverwritingMemoryFileSystem(MemoryFileSystem):
    protocol = "evolvetest-overwrite"
    store: ClassVar[dict[str, Any]] = {}  # its own, not the real memory:// contents
    pseudo_dirs: ClassVar[list[str]] = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith(f"{cls.protocol}://"):
            path = path[len(cls.protocol) + 3 :]
        return MemoryFileSystem._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        return super()._open(path, mode.replace("x", "w"), **kwargs)


def test_doctor_flags_a_backend_that_overwrites() -> None:
    fsspec.register_implementation(
        OverwritingMemoryFileSystem.protocol, OverwritingMemoryFileSystem, clobber=True
    )
    store = Store.open(f"{OverwritingMemoryFileSystem.protocol}://broken", create=True)
    assert store.create("k", b"first") and store.create("k", b"second")  # the lie, seen directly
    report = doctor(store)
    assert not report.ok
    failing = {c.name: c.detail for c in report.failures}
    assert "create-once refuses a second writer" in failing
    assert "overwrites" in failing["create-once refuses a second writer"]
    with pytest.raises(StoreError, match="failed `evolve doctor` .*create-once"):
        require_healthy(store)
    assert "FAIL" in str(report) and "NOT healthy" in str(report)
    from typer.testing import CliRunner

    from evolve.cli import app

    url = f"{OverwritingMemoryFileSystem.protocol}://broken"
    result = CliRunner().invoke(app, ["doctor", url])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith(f"store {url}: 2 of 4 ")  # the verdict closes the FAIL lines
    assert result.output.splitlines()[-1].endswith("checks failed: `evolve run` and `resume` refuse this store")
    result = CliRunner().invoke(app, ["doctor", "memory://healthy"])
    assert result.exit_code == 0
    assert result.output.splitlines()[-1].startswith("store memory://healthy: all ")


# -- key helpers -------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**PAD - 1))
def test_step_round_trips_through_every_key(n: int) -> None:
    for key in (individual_key(n), death_key(n), claim_key(n), weights_key(n), weights_key(n, "f00d")):
        assert step_of(key) == n


@given(st.integers(min_value=0, max_value=10**PAD - 1), st.integers(min_value=0, max_value=10**PAD - 1))
def test_lexical_order_is_numeric_order(a: int, b: int) -> None:
    assert (individual_key(a) < individual_key(b)) == (a < b)
    assert (weights_key(a, "z") < weights_key(b, "a")) == (a < b) or a == b


def test_key_layout() -> None:
    assert individual_key(42) == "individuals/000000000042.json"
    assert weights_key(42) == "weights/000000000042.safetensors"
    assert death_key(0) == "deaths/000000000000.json"
    assert claim_key(7) == "claims/000000000007.json"
    assert RUN_KEY == "run.json"
    assert step_of("selections/000000000042-003.json") == 42


@pytest.mark.parametrize("bad", [-1, 10**PAD, 1.0, "3", True])
def test_bad_steps(bad) -> None:
    with pytest.raises(ValueError):
        individual_key(bad)


@pytest.mark.parametrize("key", ["run.json", "doctor/x", "deaths/abc.json"])
def test_step_of_refuses_other_keys(key: str) -> None:
    with pytest.raises(ValueError):
        step_of(key)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "dir/", "a/.tmp-x"])
def test_bad_keys(tmp_path, key: str) -> None:
    store = Store.open(str(tmp_path / "s"), create=True)
    with pytest.raises(ValueError):
        store.create(key, b"x")


def test_records_are_compact_json(tmp_path) -> None:
    store = Store.open(str(tmp_path / "s"), create=True)
    store.create_json("a.json", {"b": 1, "a": [1.5]})
    raw = (tmp_path / "s" / "a.json").read_bytes()
    assert raw.endswith(b"\n") and json.loads(raw)["a"] == [1.5]
