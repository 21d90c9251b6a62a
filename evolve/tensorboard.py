"""TensorBoard views of a run, derived from its store, incrementally and idempotently.

The store is the only truth (DESIGN.md, "Lineage and views"); a logdir is a cache of
pictures of it that can be rebuilt at any time. ``sync(store, logdir)`` brings a logdir up
to date; calling it again, or while the run goes on, never writes a point twice.

Layout of a logdir (each folder is a TensorBoard run)::

    population/          scalars per step (x = step, wall time = the record's created_at):
                         population/{best,median,worst}_fitness, population/live,
                         population/best_params, population/best_ever_fitness,
                         throughput/steps_per_hour, child/{fitness,train_seconds,params}
    lineage/             views of the whole run at global step = individuals included:
                         the family tree (Graphs), lineage/figure1 (Images),
                         lineage/ancestry_of_best (Text)
    best_model/          the best individual's decoded torch module (Graphs), its genome (Text)
    individuals/000042/  one HParams session per individual (genome stats, mutation, ...)
                         with metrics individual/{fitness,val_accuracy,test_accuracy,train_seconds}
    .evolve-tb.json      a cache of the replay (rebuilt from the store when it disagrees)

How it stays exact: individuals are immutable and are replayed in step order (a death is
applied at its ``killed_at_step``). Only the contiguous prefix of steps is included; steps
done beyond a gap (still in flight) wait for the next sync. Every event file is written
under a temporary name and renamed into place, and the population files are named by the
steps they cover, so the logdir itself says how far it got: a crash at any point leaves
either a whole file or none. Views that are not append-only (lineage, best_model) live in
one file named by the number of individuals it shows; a newer one replaces it.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import os
import re
import statistics
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from evolve.report import read_records
from evolve.store import RUN_KEY, Store, StoreError, individual_key, step_of

log = logging.getLogger(__name__)

__all__ = [
    "LiveSync",
    "PlotReport",
    "Replay",
    "SyncReport",
    "ViewError",
    "ancestry_markdown",
    "family_graph",
    "figure_png",
    "hparams_of",
    "plot",
    "read_records",
    "serve",
    "sync",
]

STATE_FILE = ".evolve-tb.json"
LOCK_FILE = ".evolve-tb.lock"
STATE_FORMAT = 1
RUN_POPULATION = "population"
RUN_LINEAGE = "lineage"
RUN_BEST = "best_model"
RUN_INDIVIDUALS = "individuals"
RATE_WINDOW = 100  # steps per hour: over the last 100 individuals
CHUNK = 1000  # individuals read and written at a time (bounds memory on a first sync of a long run)
TMP_PREFIX = ".tmp-"  # never contains "tfevents": TensorBoard ignores it until it is renamed

_POPULATION_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-steps-(\d{12})")
_LINEAGE_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-views")
_BEST_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-best-(\d{12})")
_HPARAMS_FILE = "events.out.tfevents.{step:012d}.evolve-hparams"

SCALAR_TAGS = (
    "population/best_fitness",
    "population/median_fitness",
    "population/worst_fitness",
    "population/live",
    "population/best_params",
    "population/best_ever_fitness",
    "throughput/steps_per_hour",
    "child/fitness",
    "child/train_seconds",
    "child/params",
)
METRIC_TAGS = ("individual/fitness", "individual/val_accuracy", "individual/test_accuracy",
               "individual/train_seconds")


class ViewError(Exception):
    """The views cannot be built (a logdir of another run, an unusable folder); one line."""


@dataclass
class SyncReport:
    """What one ``sync`` did."""

    logdir: str
    individuals: int = 0  # included in the views after this sync (the contiguous prefix of steps)
    new: int = 0  # individuals added by this sync (= new points per per-step scalar tag)
    hparams_runs: int = 0  # per-individual HParams runs written by this sync
    views: bool = False  # the lineage views (tree, figure, ancestry) were rewritten
    best_model: bool = False  # the best's module graph was rewritten
    best_step: int | None = None
    best_fitness: float | None = None
    waiting: int = 0  # individuals already in the store but beyond a gap (steps still in flight)
    rebuilt: bool = False  # the cache disagreed with the logdir and was rebuilt from the store
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # records skipped: (key, reason)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{self.individuals} individuals (+{self.new})"]
        if self.hparams_runs:
            parts.append(f"{self.hparams_runs} hparams runs")
        if self.views:
            parts.append("lineage views updated")
        if self.best_model:
            parts.append("best model graph updated")
        if self.best_step is not None and self.best_fitness is not None:
            parts.append(f"best {self.best_step} ({100 * self.best_fitness:.2f}%)")
        if self.waiting:
            parts.append(f"{self.waiting} waiting behind steps in flight")
        return ", ".join(parts) + f" in {self.seconds:.2f}s"


# -- reading the store --------------------------------------------------------------------------


def _run_record(store: Store) -> dict[str, Any]:
    record = store.read_json(RUN_KEY)
    if record is None:
        raise StoreError(f"no evolve run at {store.url!r} (run.json missing)")
    return record


def _run_id(record: dict[str, Any]) -> str:
    return str(record.get("nonce") or record.get("created_at"))


def _load_run(store: Store) -> tuple[Any, Any]:
    from evolve.run import load_run

    return load_run(store)


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """The few fields of an individual that the whole-run views need (kept in the cache)."""
    mutation = record.get("mutation") or None
    metrics = record.get("metrics") or {}
    params = metrics.get("params")
    return {
        "s": int(record["step"]),
        "t": _num(record.get("created_at")) or 0.0,
        "f": _num(record.get("fitness")),
        "p": [int(p) for p in record.get("parents") or []],
        "m": mutation.get("name") if isinstance(mutation, dict) else None,
        "mp": mutation.get("params") if isinstance(mutation, dict) else None,
        "o": record.get("origin"),
        "st": record.get("status"),
        "n": int(params) if isinstance(params, (int, float)) and not isinstance(params, bool) else None,
        "g": record.get("generation"),
        "ta": _num(record.get("test_accuracy")),
        "ts": _num(metrics.get("train_seconds")),
    }


def unreadable_row(step: int, t: float) -> dict[str, Any]:
    """A placeholder for an individual whose record does not parse: counted, never alive, never plotted."""
    return {"s": step, "t": t, "f": None, "p": [], "m": None, "mp": None, "o": "unreadable", "st": "unreadable",
            "n": None, "g": None, "ta": None, "ts": None}


# -- the replay -------------------------------------------------------------------------------


class Replay:
    """Births and deaths in step order: the live population after each step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []  # rows[i]["s"] == i: the contiguous prefix
        self.live: set[int] = set()
        self._ranked: list[tuple[float, int]] = []  # (fitness, -step) of live members with a fitness
        self._clock: list[float] = []  # running maximum of created_at (a monotone wall clock)
        self.best_ever: tuple[float, int] | None = None  # (fitness, step); ties go to the earliest
        self._doomed: set[int] = set()  # killed by an earlier step before their own step is replayed

    @property
    def next_step(self) -> int:
        return len(self.rows)

    def dead(self) -> set[int]:
        return set(range(len(self.rows))) - self.live

    def birth(self, row: dict[str, Any]) -> None:
        if row["s"] != len(self.rows):
            raise ValueError(f"replay out of order: step {row['s']} after {len(self.rows) - 1}")
        self.rows.append(row)
        if row["st"] == "unreadable":
            self._clock.append(self._clock[-1] if self._clock else row["t"])
            return
        self._clock.append(max(row["t"], self._clock[-1]) if self._clock else row["t"])
        if row["f"] is not None and (self.best_ever is None or row["f"] > self.best_ever[0]):
            self.best_ever = (row["f"], row["s"])
        if row["s"] in self._doomed:  # claims run out of order: an earlier step already killed it
            self._doomed.discard(row["s"])
            return
        self.live.add(row["s"])
        if row["f"] is not None:
            bisect.insort(self._ranked, (row["f"], -row["s"]))

    def death(self, step: int) -> None:
        if step >= len(self.rows):
            self._doomed.add(step)
            return
        if step not in self.live:
            return
        self.live.discard(step)
        fitness = self.rows[step]["f"]
        if fitness is not None:
            i = bisect.bisect_left(self._ranked, (fitness, -step))
            if i < len(self._ranked) and self._ranked[i] == (fitness, -step):
                del self._ranked[i]

    def best_live(self) -> int | None:
        """The step of the fittest live individual (ties: the earliest)."""
        return -self._ranked[-1][1] if self._ranked else None  # (f, -step) sorts the earliest last

    def scalars(self) -> dict[str, float]:
        """The population's scalars right after the last step replayed."""
        row = self.rows[-1]
        # a doomed individual's killer took a place that the loser, replayed later, never holds
        out: dict[str, float] = {"population/live": float(len(self.live) - len(self._doomed))}
        if self._ranked:
            values = [f for f, _ in self._ranked]
            out["population/best_fitness"] = values[-1]
            out["population/worst_fitness"] = values[0]
            out["population/median_fitness"] = statistics.median(values)
            best_params = self.rows[self.best_live()]["n"]
            if best_params is not None:
                out["population/best_params"] = float(best_params)
        if self.best_ever is not None:
            out["population/best_ever_fitness"] = self.best_ever[0]
        i = len(self.rows) - 1
        window = min(RATE_WINDOW, i)
        if window >= 1 and self._clock[i] > self._clock[i - window]:
            out["throughput/steps_per_hour"] = window / (self._clock[i] - self._clock[i - window]) * 3600.0
        if row["f"] is not None:
            out["child/fitness"] = row["f"]
        if row["ts"] is not None:
            out["child/train_seconds"] = row["ts"]
        if row["n"] is not None:
            out["child/params"] = float(row["n"])
        return out

    def best(self) -> dict[str, Any] | None:
        """The best individual so far, dead or alive (as ``Snapshot.best``)."""
        return None if self.best_ever is None else self.rows[self.best_ever[1]]

    def ancestry(self, step: int) -> list[dict[str, Any]]:
        """Rows of ``step`` and its first-parent ancestors, oldest first."""
        return _ancestry(_Index(self.rows), step)


class _Index:
    """rows as a mapping step -> row (rows[i] is step i)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def get(self, step: int) -> dict[str, Any] | None:
        return self.rows[step] if 0 <= step < len(self.rows) else None


def _ancestry(index: Any, step: int) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[int] = set()
    current: int | None = step
    while current is not None and current not in seen and (row := index.get(current)) is not None:
        seen.add(current)
        chain.append(row)
        current = row["p"][0] if row["p"] else None
    return chain[::-1]


def _deaths_by_kill(deaths: dict[int, dict[str, Any]]) -> dict[int, list[int]]:
    by_kill: dict[int, list[int]] = {}
    for loser, record in deaths.items():
        killed = record.get("killed_at_step")
        if isinstance(killed, int) and not isinstance(killed, bool):
            by_kill.setdefault(killed, []).append(loser)
    return by_kill


def _replay_all(store: Store, upto: int, threads: int) -> Replay:
    """Replay steps ``0..upto-1`` from the store without writing anything (rebuilding the cache)."""
    replay = Replay()
    if upto <= 0:
        return replay
    bad: list[tuple[str, str]] = []
    by_kill = _deaths_by_kill(read_records(store, store.list_keys("deaths/"), threads, []))
    for start in range(0, upto, CHUNK):
        steps = range(start, min(start + CHUNK, upto))
        records = read_records(store, [individual_key(s) for s in steps], threads, bad)
        broken = {step_of(k) for k, _ in bad}
        missing = [s for s in steps if s not in records and s not in broken]
        if missing:
            raise ViewError(f"the logdir shows steps up to {upto - 1} but the store at {store.url} lacks "
                            f"individual {missing[0]}: is this logdir from another store?")
        for s in steps:
            replay.birth(row_of(records[s]) if s in records else unreadable_row(s, replay.rows[-1]["t"] if s else 0.0))
            for loser in by_kill.get(s, ()):
                replay.death(loser)
    return replay


# -- event files --------------------------------------------------------------------------------


class _EventFile:
    """An event file written under a temporary name and renamed into place on success."""

    def __init__(self, folder: str, name: str, wall_time: float | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, name)
        self.tmp = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._writer = RecordWriter(self._fh)
        self.add(Event(wall_time=time.time() if wall_time is None else wall_time, file_version="brain.Event:2"))

    def add(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def add_bytes(self, event: bytes) -> None:
        self._writer.write(event)

    def commit(self, durable: bool = True) -> None:
        self._fh.flush()
        if durable:
            os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def _event_file(folder: str, name: str, wall_time: float | None = None, durable: bool = True) -> Iterator[_EventFile]:
    """``durable=False`` skips the fsync: for the thousands of tiny per-individual files, where a power
    cut costs at most a re-sync (a process crash is covered by the rename alone)."""
    f = _EventFile(folder, name, wall_time)
    try:
        yield f
    except BaseException:
        f.abort()
        raise
    f.commit(durable)


def _scalar_summary(values: dict[str, float]) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])


def _text_value(tag: str, text: str) -> Any:
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text import metadata as text_metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
    return Summary.Value(tag=tag, metadata=text_metadata.create_summary_metadata(None, None), tensor=tensor)


def _image_value(tag: str, png: bytes) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = png_size(png)
    return Summary.Value(tag=tag, image=Summary.Image(height=height, width=width, colorspace=4,
                                                       encoded_image_string=png))


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes."""
    import struct

    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def _files(folder: str, pattern: re.Pattern[str]) -> list[tuple[str, re.Match[str]]]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(((name, m) for name in names if (m := pattern.fullmatch(name))), key=lambda p: p[0])


def _committed_next(logdir: str) -> int:
    """One past the last step the population files hold, from their names (0 if none)."""
    files = _files(os.path.join(logdir, RUN_POPULATION), _POPULATION_FILE)
    return max((int(m.group(2)) + 1 for _, m in files), default=0)


def _replace_older(folder: str, pattern: re.Pattern[str], keep: str) -> None:
    for name, _ in _files(folder, pattern):
        if name != keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


# -- the cache ---------------------------------------------------------------------------------


@dataclass
class _State:
    run: str
    store: str
    replay: Replay
    views_at: float = 0.0  # time.time() of the last lineage write
    best_model_failed: int | None = None  # best step whose module could not be traced

    def save(self, logdir: str) -> None:
        data = {"format": STATE_FORMAT, "run": self.run, "store": self.store, "next_step": self.replay.next_step,
                "live": sorted(self.replay.live), "doomed": sorted(self.replay._doomed), "rows": self.replay.rows,
                "views_at": self.views_at,
                "best_model_failed": self.best_model_failed}
        path = os.path.join(logdir, STATE_FILE)
        tmp = os.path.join(logdir, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, separators=(",", ":")))  # dumps: the C encoder (dump is pure Python)
        os.replace(tmp, path)

    @classmethod
    def load(cls, logdir: str) -> _State | None:
        """The cache, or None when missing or unreadable (it is then rebuilt from the store)."""
        try:
            with open(os.path.join(logdir, STATE_FILE)) as fh:
                data = json.load(fh)
            if data.get("format") != STATE_FORMAT:
                return None
            replay = Replay()
            for row in data["rows"]:
                replay.birth(row)
            for step in set(range(replay.next_step)) - set(data["live"]):
                replay.death(step)
            if replay.next_step != data["next_step"]:
                return None
            replay._doomed = {int(s) for s in data.get("doomed", [])}
            return cls(run=data["run"], store=data.get("store", ""), replay=replay,
                       views_at=float(data.get("views_at") or 0.0), best_model_failed=data.get("best_model_failed"))
        except (OSError, ValueError, KeyError, TypeError):
            return None


@contextlib.contextmanager
def _locked(logdir: str) -> Iterator[None]:
    """One syncer per logdir at a time (a live run and `evolve tensorboard --serve` may share one)."""
    import fcntl

    with open(os.path.join(logdir, LOCK_FILE), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_logdir(logdir: str) -> str:
    logdir = os.fspath(logdir)
    if "://" in logdir and not logdir.startswith("file://"):
        raise ViewError(f"the logdir must be a local folder, got {logdir!r}")
    logdir = os.path.abspath(os.path.expanduser(logdir.removeprefix("file://")))
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise ViewError(f"logdir {logdir!r} is a file, not a folder")
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as exc:
        raise ViewError(f"cannot create logdir {logdir!r}: {exc.strerror or exc}") from exc
    if not os.access(logdir, os.W_OK | os.X_OK):
        raise ViewError(f"logdir {logdir!r} is not writable")
    return logdir


# -- sync ---------------------------------------------------------------------------------------


def sync(store: Store, logdir: str, *, hparams: bool = True, views: bool = True, model_graph: bool = True,
         views_every: float = 0.0, threads: int = 8) -> SyncReport:
    """Bring ``logdir``'s TensorBoard views up to date with ``store``; idempotent and incremental.

    ``hparams``: one HParams run per individual under ``individuals/``. ``views``: the lineage
    run (family tree, Figure 1, ancestry of the best). ``model_graph``: the best's module in
    ``best_model/``. ``views_every``: rewrite the lineage views at most this often (seconds;
    0 = whenever the number of individuals changed); a live run passes a minute or so.
    """
    started = time.perf_counter()
    logdir = _prepare_logdir(logdir)
    report = SyncReport(logdir=logdir)
    run_record = _run_record(store)
    run_id = _run_id(run_record)
    config, space = _load_run(store)
    with _locked(logdir):
        state = _State.load(logdir)
        if state is not None and state.run != run_id:
            raise ViewError(f"logdir {logdir} holds the views of another run ({state.store}); "
                            "use an empty folder for this one")
        committed = _committed_next(logdir)
        if state is None or state.replay.next_step != committed:
            state = _State(run=run_id, store=store.url, replay=_replay_all(store, committed, threads))
            report.rebuilt = True
        replay = state.replay

        # what is new: list individuals first, then deaths (a child's tombstone is written before it)
        steps = {step_of(k) for k in store.list_keys("individuals/") if k.endswith(".json")}
        death_keys = store.list_keys("deaths/")
        end = replay.next_step
        while end in steps:
            end += 1
        report.waiting = sum(1 for s in steps if s > end)
        new = range(replay.next_step, end)
        if new:
            dead = replay.dead()
            deaths = read_records(store, [k for k in death_keys if step_of(k) not in dead], threads,
                                  report.unreadable)
            by_kill = _deaths_by_kill(deaths)
            events = []  # serialized events: small, unlike the records (genomes), which go chunk by chunk
            for chunk in range(new.start, new.stop, CHUNK):
                steps_ = range(chunk, min(chunk + CHUNK, new.stop))
                records = read_records(store, [individual_key(s) for s in steps_], threads, report.unreadable)
                for s in steps_:
                    t = replay.rows[-1]["t"] if replay.rows else 0.0
                    replay.birth(row_of(records[s]) if s in records else unreadable_row(s, t))
                    for loser in by_kill.get(s, ()):
                        replay.death(loser)
                    events.append(_step_event(replay))
                if hparams:
                    report.hparams_runs += _write_hparams(logdir, [records[s] for s in steps_ if s in records],
                                                          space, report)
                del records
            name = f"events.out.tfevents.{new[0]:012d}.evolve-steps-{new[-1]:012d}"
            with _event_file(os.path.join(logdir, RUN_POPULATION), name, replay.rows[new[0]]["t"]) as f:
                for event in events:
                    f.add_bytes(event)
            report.new = len(new)
            state.save(logdir)
        elif report.rebuilt:
            state.save(logdir)
        report.individuals = replay.next_step
        best = replay.best()
        if best is not None:
            report.best_step, report.best_fitness = best["s"], best["f"]
        if replay.next_step and (views or model_graph):
            _write_views(store, logdir, state, report, run_record, config, space, views, model_graph,
                         views_every)
    report.seconds = time.perf_counter() - started
    return report


def _step_event(replay: Replay) -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event

    row = replay.rows[-1]
    return Event(step=row["s"], wall_time=row["t"], summary=_scalar_summary(replay.scalars())).SerializeToString()


# -- HParams ----------------------------------------------------------------------------------


def hparams_of(record: dict[str, Any], space: Any) -> dict[str, Any]:
    """The hyperparameters of one individual: its genome's stats, mutation, origin, parent, worker."""
    from genomes import GenomeError, genome_from_json

    mutation = record.get("mutation")
    metrics = record.get("metrics") or {}
    genome = record.get("genome") or {}
    out: dict[str, Any] = {
        "origin": str(record.get("origin") or ""),
        "mutation": str(mutation.get("name") or "") if isinstance(mutation, dict) else "initial",
        "kind": str(genome.get("kind") or ""),
        "status": str(record.get("status") or ""),
        "worker": str(record.get("worker") or ""),
        "parent": int((record.get("parents") or [-1])[0]),
        "step": int(record["step"]),
    }
    if record.get("generation") is not None:
        out["generation"] = int(record["generation"])
    flops = metrics.get("flops")
    if isinstance(flops, (int, float)) and not isinstance(flops, bool) and flops:
        out["flops"] = float(flops)
    try:
        stats = genome_from_json(genome).stats(tuple(space.input_shape), space.num_classes)
    except (GenomeError, KeyError, TypeError, ValueError):
        stats = {}
    for name, value in stats.items():
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def _write_hparams(logdir: str, records: list[dict[str, Any]], space: Any, report: SyncReport) -> int:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb

    written = 0
    for record in records:
        step = int(record["step"])
        folder = os.path.join(logdir, RUN_INDIVIDUALS, f"{step:06d}")
        name = _HPARAMS_FILE.format(step=step)
        if os.path.exists(os.path.join(folder, name)):
            continue
        wall = _num(record.get("created_at")) or time.time()
        try:
            session = hparams_pb(hparams_of(record, space), trial_id=f"{step:06d}", start_time_secs=wall)
        except (TypeError, ValueError) as exc:
            report.errors.append(f"hparams of individual {step}: {exc}")
            continue
        metrics = {"individual/fitness": _num(record.get("fitness")),
                   "individual/val_accuracy": _num(record.get("val_accuracy")),
                   "individual/test_accuracy": _num(record.get("test_accuracy")),
                   "individual/train_seconds": _num((record.get("metrics") or {}).get("train_seconds"))}
        with _event_file(folder, name, wall, durable=False) as f:
            f.add(Event(step=0, wall_time=wall, summary=session))
            f.add(Event(step=0, wall_time=wall,
                        summary=_scalar_summary({k: v for k, v in metrics.items() if v is not None})))
        written += 1
    return written


# -- whole-run views -----------------------------------------------------------------------------


def _write_views(store: Store, logdir: str, state: _State, report: SyncReport, run_record: dict[str, Any],
                 config: Any, space: Any, views: bool, model_graph: bool, views_every: float) -> None:
    from tensorboard.compat.proto.event_pb2 import Event, TaggedRunMetadata
    from tensorboard.compat.proto.summary_pb2 import Summary

    replay = state.replay
    count = replay.next_step
    best = replay.best()
    best_record: dict[str, Any] | None = None

    folder = os.path.join(logdir, RUN_LINEAGE)
    name = f"events.out.tfevents.{count:012d}.evolve-views"
    due = time.time() - state.views_at >= views_every
    if views and due and not os.path.exists(os.path.join(folder, name)):
        best_record = _best_record(store, best["s"]) if best else None
        chain = replay.ancestry(best["s"]) if best else []
        png = figure_png(replay.rows, replay.live, chain, title=_title(config, replay.rows, replay.live, best),
                         t0=_num(run_record.get("created_at")))
        text = ancestry_markdown(chain, best_record, replay.live)
        graph = family_graph(replay.rows, replay.live)
        wall = max(r["t"] for r in replay.rows)
        with _event_file(folder, name, wall) as f:
            f.add(Event(step=count, wall_time=wall, graph_def=graph.SerializeToString()))
            f.add(Event(step=count, wall_time=wall, summary=Summary(value=[
                _image_value("lineage/figure1", png),
                _text_value("lineage/ancestry_of_best", text),
            ])))
        _replace_older(folder, _LINEAGE_FILE, name)
        state.views_at = time.time()
        state.save(logdir)
        report.views = True

    if model_graph and best is not None:
        folder = os.path.join(logdir, RUN_BEST)
        current = _files(folder, _BEST_FILE)
        shown = int(current[-1][1].group(2)) if current else None
        if shown == best["s"] or state.best_model_failed == best["s"]:
            return
        best_record = best_record or _best_record(store, best["s"])
        try:
            graph_def, run_metadata = _module_graph(best_record, space)
        except Exception as exc:  # noqa: BLE001 - a genome torch cannot trace is not fatal
            report.errors.append(f"best model graph of individual {best['s']}: {type(exc).__name__}: {exc}")
            state.best_model_failed = best["s"]
            state.save(logdir)
            return
        name = f"events.out.tfevents.{count:012d}.evolve-best-{best['s']:012d}"
        wall = best["t"]
        with _event_file(folder, name, wall) as f:
            f.add(Event(step=best["s"], wall_time=wall, graph_def=graph_def.SerializeToString()))
            f.add(Event(step=best["s"], wall_time=wall, tagged_run_metadata=TaggedRunMetadata(
                tag=f"individual_{best['s']}", run_metadata=run_metadata.SerializeToString())))
            f.add(Event(step=best["s"], wall_time=wall, summary=Summary(value=[
                _text_value("best_model/genome", _genome_markdown(best_record))])))
        _replace_older(folder, _BEST_FILE, name)
        report.best_model = True


def _module_graph(record: dict[str, Any], space: Any) -> tuple[Any, Any]:
    """The GraphDef of the individual's decoded torch module, traced on a zero input of the run's shape."""
    import torch
    from torch.utils.tensorboard._pytorch_graph import graph  # what SummaryWriter.add_graph calls

    from genomes import genome_from_json

    module = genome_from_json(record["genome"]).to_module(tuple(space.input_shape), space.num_classes)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: fine here
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace: still what add_graph uses
        return graph(module, (torch.zeros(1, *space.input_shape),))


def _best_record(store: Store, step: int) -> dict[str, Any] | None:
    """The best's record with its kept test accuracy and final model (``evolve.result``), if any yet."""
    from evolve.result import kept_results

    record = store.read_json(individual_key(step))
    return kept_results(store, record) if record is not None else None


def _final_line(record: dict[str, Any]) -> str:
    final = record.get("final") or {}
    if final.get("status") != "ok":
        return ""
    from evolve.result import describe_final

    return f"; {describe_final(final)}"


def _genome_markdown(record: dict[str, Any]) -> str:
    from genomes import genome_from_json

    return (f"**Individual {record['step']}**: fitness {_pct(record.get('fitness'))}, test "
            f"{_pct(record.get('test_accuracy'))}, {(record.get('metrics') or {}).get('params', 0):,} parameters"
            f"{_final_line(record)}\n\n"
            f"`{genome_from_json(record['genome']).describe()}`\n\n"
            f"```\n{json.dumps(record['genome'], indent=1)}\n```")


def _pct(value: Any) -> str:
    value = _num(value)
    return "n/a" if value is None else f"{100 * value:.2f}%"


def ancestry_markdown(chain: list[dict[str, Any]], best_record: dict[str, Any] | None, live: set[int]) -> str:
    """The line of descent of the best as a markdown table (oldest first)."""
    if not chain:
        return "no individuals yet"
    best = chain[-1]
    test = best["ta"] if best_record is None or best_record.get("test_accuracy") is None \
        else best_record["test_accuracy"]
    lines = [(f"**Best individual: step {best['s']}** ({'alive' if best['s'] in live else 'dead'}), fitness "
              f"{_pct(best['f'])}, test {_pct(test)}, {best['n'] or 0:,} parameters, "
              f"{len(chain) - 1} ancestors back to the initial population"
              f"{_final_line(best_record) if best_record else ''}")]
    if best_record is not None:
        from genomes import GenomeError, genome_from_json

        with contextlib.suppress(GenomeError, KeyError, TypeError, ValueError):
            lines.append(f"\n`{genome_from_json(best_record['genome']).describe()}`")
    lines.append("\n| generation | step | mutation | parameters | fitness | Δ fitness |")
    lines.append("|---:|---:|---|---:|---:|---:|")
    previous: float | None = None
    for i, row in enumerate(chain):
        mutation = row["m"] or row["o"] or "initial"
        if row["mp"]:
            mutation += " `" + json.dumps(row["mp"], separators=(",", ":"), sort_keys=True)[:120] + "`"
        delta = "" if previous is None or row["f"] is None else f"{100 * (row['f'] - previous):+.2f}"
        lines.append(f"| {i} | {row['s']} | {mutation} | {row['n'] or 0:,} | {_pct(row['f'])} | {delta} |")
        previous = row["f"] if row["f"] is not None else previous
    return "\n".join(lines)


def _scope(row: dict[str, Any], total: int, generational: bool) -> str:
    """Name scopes that keep the Graphs dashboard readable: generations, or blocks of 100 (and 1,000) steps."""
    if generational:
        return f"generation_{int(row['g'] or 0):04d}/"
    s = row["s"]
    hundred = f"steps_{s // 100 * 100:06d}-{s // 100 * 100 + 99:06d}/"
    if total > 1000:
        return f"steps_{s // 1000 * 1000:06d}-{s // 1000 * 1000 + 999:06d}/" + hundred
    return hundred


def node_name(row: dict[str, Any], total: int, generational: bool) -> str:
    # "step42", not "step_42": TensorBoard folds names ending in _<digits> into series nodes
    return f"{_scope(row, total, generational)}step{row['s']}"


def family_graph(rows: list[dict[str, Any]], live: set[int]) -> Any:
    """The family tree as a GraphDef: a node per individual (op = mutation, device = /alive or /dead),
    inputs = its parents, attrs = step, mutation, its params, fitness, test accuracy, parameters."""
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef

    generational = any(r["o"] == "generation" for r in rows)
    total = len(rows)
    names = {row["s"]: node_name(row, total, generational) for row in rows}  # a parent may have a later step
    nodes = []
    for row in rows:
        s = row["s"]
        op = row["m"] or row["o"] or "initial"
        attr = {
            "step": AttrValue(i=s),
            "mutation": AttrValue(s=op.encode()),
            "alive": AttrValue(b=s in live),
            "status": AttrValue(s=str(row["st"] or "").encode()),
            "created_at": AttrValue(i=int(row["t"])),  # unix seconds (f would be float32)
        }
        if row["mp"]:
            attr["mutation_params"] = AttrValue(s=json.dumps(row["mp"], sort_keys=True).encode())
        if row["f"] is not None:
            attr["fitness"] = AttrValue(f=row["f"])
        if row["ta"] is not None:
            attr["test_accuracy"] = AttrValue(f=row["ta"])
        if row["n"] is not None:
            attr["params"] = AttrValue(i=int(row["n"]))
        nodes.append(NodeDef(name=names[s], op=op, input=[names[p] for p in row["p"] if p in names],
                             device="/alive" if s in live else "/dead", attr=attr))
    return GraphDef(node=nodes)


def _title(config: Any, rows: list[dict[str, Any]], live: set[int], best: dict[str, Any] | None) -> str:
    head = (f"{config.genome} · {config.selection} selection · population {config.population} · "
            f"{config.dataset if config.fitness == 'train' else 'synthetic fitness'}")
    tail = f"{len(rows):,} individuals, {len(live):,} alive"
    if best is not None and best["f"] is not None:
        tail += f", best {100 * best['f']:.2f}% (step {best['s']})"
    return head + "\n" + tail


# -- the picture ----------------------------------------------------------------------------


def figure_png(rows: list[dict[str, Any]], live: set[int], chain: list[dict[str, Any]], title: str = "",
               t0: float | None = None, size: tuple[float, float] = (10.0, 6.0), dpi: int = 100) -> bytes:
    """Figure 1 of Real et al. 2017: every individual (x = wall time, y = fitness), dead grey, alive in
    colour, the best's line of descent drawn through them. PNG bytes (matplotlib's Agg, no pyplot)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    times = [r["t"] for r in rows]
    start = min(times, default=0.0)
    if t0 is not None and t0 <= start:
        start = t0
    span = max(times, default=start) - start
    unit, scale = ("hours", 3600.0) if span >= 7200 else ("minutes", 60.0) if span >= 120 else ("seconds", 1.0)

    def x(row: dict[str, Any]) -> float:
        return (row["t"] - start) / scale

    rows = [r for r in rows if r["st"] != "unreadable"]
    ok = [r for r in rows if r["f"] is not None and r["st"] in (None, "ok")]
    failed = [r for r in rows if not (r["f"] is not None and r["st"] in (None, "ok"))]
    dead = [r for r in ok if r["s"] not in live]
    alive = [r for r in ok if r["s"] in live]
    small = 5 if len(rows) > 2000 else 9 if len(rows) > 500 else 14
    if dead:
        ax.scatter([x(r) for r in dead], [r["f"] for r in dead], s=small, c="#b0b0b0", alpha=0.6,
                   linewidths=0, label=f"dead ({len(dead):,})", zorder=1, rasterized=True)
    if failed:
        ax.scatter([x(r) for r in failed], [r["f"] or 0.0 for r in failed], s=small * 2, c="#d62728",
                   marker="x", linewidths=0.8, alpha=0.7, label=f"failed ({len(failed):,})", zorder=2)
    if alive:
        ax.scatter([x(r) for r in alive], [r["f"] for r in alive], s=small * 3, c="#1f77b4",
                   edgecolors="#0b3d66", linewidths=0.4, label=f"alive ({len(alive):,})", zorder=3)
    line = [r for r in chain if r["f"] is not None]
    if line:
        ax.plot([x(r) for r in line], [r["f"] for r in line], color="#ff7f0e", linewidth=1.6,
                marker="o", markersize=3.5, markeredgecolor="#8a4100",
                label=f"line of descent of the best ({len(chain) - 1} ancestors)", zorder=4)
        best = line[-1]
        ax.scatter([x(best)], [best["f"]], s=220, marker="*", c="#ffd700", edgecolors="black",
                   linewidths=0.8, zorder=5, label=f"best: step {best['s']}, {100 * best['f']:.2f}%")
    generational = any(r["o"] == "generation" for r in rows)
    ax.set_xlabel(f"wall time since the start of the run ({unit})")
    ax.set_ylabel("fitness (validation accuracy" + (", averaged)" if generational else ")"))
    ax.set_title(title or "evolution of the population", fontsize=10)
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)
    if rows:
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


@dataclass
class PlotReport:
    path: str
    individuals: int
    alive: int
    best_step: int | None
    width: int
    height: int
    seconds: float
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def plot(store: Store, path: str, *, size: tuple[float, float] = (10.0, 6.0), dpi: int = 150,
         threads: int = 8) -> PlotReport:
    """Write the Figure-1 picture of the run in ``store`` (every individual now in it) to ``path`` (PNG)."""
    started = time.perf_counter()
    run_record = _run_record(store)
    config, _ = _load_run(store)
    unreadable: list[tuple[str, str]] = []
    records = read_records(store, store.list_keys("individuals/"), threads, unreadable)
    dead = {step_of(k) for k in store.list_keys("deaths/") if k.endswith(".json")}
    rows = [row_of(records[s]) for s in sorted(records)]
    live = {r["s"] for r in rows} - dead
    best = max((r for r in rows if r["f"] is not None), key=lambda r: (r["f"], -r["s"]), default=None)
    chain = _ancestry({r["s"]: r for r in rows}, best["s"]) if best else []
    png = figure_png(rows, live, chain, title=_title(config, rows, live, best),
                     t0=_num(run_record.get("created_at")), size=size, dpi=dpi)
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    tmp = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex}.png")
    try:
        with open(tmp, "wb") as fh:
            fh.write(png)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ViewError(f"cannot write {path}: {exc.strerror or exc}") from exc
    width, height = png_size(png)
    return PlotReport(path=path, individuals=len(rows), alive=len(live), best_step=best["s"] if best else None,
                      width=width, height=height, seconds=time.perf_counter() - started, unreadable=unreadable)


# -- live and served ---------------------------------------------------------------------------


class LiveSync:
    """Keeps a logdir in step with a running store; made to be called from ``on_progress``.

    ``live = LiveSync(store, logdir)``; ``live(done)`` syncs when ``every`` seconds have passed
    since the last sync (lineage views at most every ``views_every``); ``live.close()`` does a
    last full sync. Failures are logged, never raised: views must not stop a run.
    """

    def __init__(self, store: Store, logdir: str, every: float = 10.0, views_every: float = 60.0,
                 **options: Any) -> None:
        self.store, self.logdir = store, logdir
        self.every, self.views_every = every, views_every
        self.options = options
        self.last: float = float("-inf")
        self.report: SyncReport | None = None

    def __call__(self, done: int | None = None) -> SyncReport | None:
        if time.monotonic() - self.last < self.every:
            return None
        return self._sync(self.views_every)

    def close(self) -> SyncReport | None:
        return self._sync(0.0)

    def _sync(self, views_every: float) -> SyncReport | None:
        self.last = time.monotonic()
        try:
            self.report = sync(self.store, self.logdir, views_every=views_every, **self.options)
        except Exception as exc:  # noqa: BLE001 - views are a side show; the run goes on
            log.warning("tensorboard views of %s not updated: %s", self.store.url, exc)
            return None
        return self.report


def tensorboard_command(logdir: str, port: int, reload_interval: float = 5.0) -> list[str]:
    import sys

    return [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
            "--port", str(port), "--reload_interval", str(max(1, int(reload_interval)))]


def serve(store: Store, logdir: str, port: int = 6006, interval: float = 5.0, views_every: float = 30.0,
          on_sync: Callable[[SyncReport], None] | None = None, **options: Any) -> int:
    """Start TensorBoard on ``logdir`` (127.0.0.1:``port``) and keep syncing it every ``interval``
    seconds until Ctrl-C. Returns TensorBoard's exit code if it stops by itself, 0 on Ctrl-C."""
    import signal
    import subprocess
    import threading

    logdir = _prepare_logdir(logdir)
    report = sync(store, logdir, **options)
    if on_sync:
        on_sync(report)
    process = subprocess.Popen(tensorboard_command(logdir, port, interval))
    previous = None
    if threading.current_thread() is threading.main_thread():
        def stop(signum, frame):  # SIGTERM (a service manager, `kill`) stops like Ctrl-C
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                process.wait(timeout=interval)
                return process.returncode
            except subprocess.TimeoutExpired:
                pass
            try:
                report = sync(store, logdir, views_every=views_every, **options)
            except StoreError as exc:
                log.warning("sync failed (will retry): %s", exc)
                continue
            if on_sync and (report.new or report.views or report.best_model):
                on_sync(report)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
