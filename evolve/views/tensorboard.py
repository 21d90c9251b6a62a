"""TensorBoard views of a run, derived from its store, incrementally and idempotently.

The store is the only truth (docs/ARCHITECTURE.md, "Lineage and views"); a logdir is a cache of
pictures of it that can be rebuilt at any time. ``sync(store, logdir)`` brings a logdir up
to date; calling it again, or while the run goes on, never writes a point twice.

Layout of a logdir (each folder is a TensorBoard run)::

    population/          scalars per step (x = step, wall time = the record's created_at), one group
                         (TensorBoard orders groups by name; the population's curves come first):
                         population/{best,median,worst}_fitness, population/live,
                         population/best_params, population/best_ever_fitness,
                         population/steps_per_hour, population/child_{fitness,train_seconds,params}
    lineage/             views of the whole run at global step = individuals included:
                         the family tree (Graphs: the first run with a graph, so the tab opens on
                         it), lineage/figure1 (Images), lineage/ancestry_of_best (Text)
    the_best/            the best individual's decoded torch module (Graphs), its genome (Text)
    finalize/            the models evolve finalize made: finalize/<stage>/{test_accuracy,params,
                         mflops,infer_ms,compute_seconds} (Scalars, at global step = individuals),
                         finalize/table (Text); Figure 1 marks them beside the best
    individuals/000042/  opt-in (``individuals=True``): one HParams session per individual (genome
                         stats, mutation and its words, ...)
                         with metrics individual/{fitness,val_accuracy,test_accuracy,train_seconds}
    .evolve-tb.json      a cache of the replay (rebuilt from the store when it disagrees)

How it stays exact: individuals are immutable and are replayed in step order (a death is
applied at its ``killed_at_step``). Only the contiguous prefix of steps is included; steps
done beyond a gap (still in flight) wait for the next sync. Every event file is written
under a temporary name and renamed into place, and the population files are named by the
steps they cover, so the logdir itself says how far it got: a crash at any point leaves
either a whole file or none. Views that are not append-only (lineage, the_best) live in
one file named by the number of individuals it shows; a newer one replaces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from evolve.final.table import markdown, stage_rows
from evolve.final.table import marks as finalize_marks
from evolve.runner.record import load_run, read_run_record
from evolve.store.backend import Store
from evolve.store.keys import individual_key, step_of
from evolve.store.records import Individual
from evolve.store.snapshot import read_records
from evolve.views.events import (
    event_file,
    files_matching,
    image_value,
    locked,
    replace_older,
    scalar_summary,
    text_value,
)
from evolve.views.history import CHUNK, Replay, Row, ViewError, deaths_by_kill, num, replay_all
from evolve.views.lineage import (
    TMP_PREFIX,
    ancestry_markdown,
    family_graph,
    figure_png,
    figure_title,
    fitness_text,
    genome_markdown,
    read_best_record,
)
from genomes import GenomeError, genome_from_json
from genomes.words import mutation_words

log = logging.getLogger(__name__)

__all__ = ["SyncReport", "ViewError", "hparams_of", "prepare_logdir", "sync"]

STATE_FILE = ".evolve-tb.json"
STATE_FORMAT = 2  # 2: rows are lists in evolve.views.history.Row's field order
RUN_POPULATION = "population"
RUN_LINEAGE = "lineage"
RUN_BEST = "the_best"  # after "lineage": the Graphs tab opens on the first run, the family tree
RUN_FINALIZE = "finalize"
RUN_INDIVIDUALS = "individuals"

_POPULATION_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-population-(\d{12})")
_RETIRED = (  # what an earlier evolve wrote under other tags and run names, or with mutations as JSON
    ("population", re.compile(r"events\.out\.tfevents\.\d{12}\.evolve-steps-\d{12}")),
    ("best_model", re.compile(r"events\.out\.tfevents\.\d{12}\.evolve-best-\d{12}")),
    ("lineage", re.compile(r"events\.out\.tfevents\.\d{12}\.evolve-views(?:-f\d+)?")),
)
_LINEAGE_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-lineage(?:-f(\d+))?")
_FINALIZE_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-finalize-([0-9a-f]{12})")
_BEST_FILE = re.compile(r"events\.out\.tfevents\.(\d{12})\.evolve-best-(\d{12})")
_HPARAMS_FILE = "events.out.tfevents.{step:012d}.evolve-hparams"

SCALAR_TAGS = (
    "population/best_fitness",
    "population/median_fitness",
    "population/worst_fitness",
    "population/live",
    "population/best_params",
    "population/best_ever_fitness",
    "population/steps_per_hour",
    "population/child_fitness",
    "population/child_train_seconds",
    "population/child_params",
)
METRIC_TAGS = ("individual/fitness", "individual/val_accuracy", "individual/test_accuracy",
               "individual/train_seconds")


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
            parts.append(f"best {self.best_step} ({fitness_text(self.best_fitness)})")
        if self.waiting:
            parts.append(f"{self.waiting} waiting behind steps in flight")
        return ", ".join(parts) + f" in {self.seconds:.2f}s"


# -- reading the store --------------------------------------------------------------------------


def _run_id(record: dict[str, Any]) -> str:
    return str(record.get("nonce") or record.get("created_at"))





def _retire(logdir: str) -> bool:
    """Remove the files an earlier version wrote under other tag or run names (they would show beside the
    new ones); the sync then writes their content again. Whether any was removed."""
    removed = False
    for run, pattern in _RETIRED:
        folder = os.path.join(logdir, run)
        for name, _ in files_matching(folder, pattern):
            os.remove(os.path.join(folder, name))
            removed = True
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty
    return removed


def _committed_next(logdir: str) -> int:
    """One past the last step the population files hold, from their names (0 if none)."""
    files = files_matching(os.path.join(logdir, RUN_POPULATION), _POPULATION_FILE)
    return max((int(m.group(2)) + 1 for _, m in files), default=0)


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
                "live": sorted(self.replay.live), "doomed": sorted(self.replay._doomed),
                "rows": [r.to_json() for r in self.replay.rows],
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
                replay.birth(Row.from_json(row))
            for step in set(range(replay.next_step)) - set(data["live"]):
                replay.death(step)
            if replay.next_step != data["next_step"]:
                return None
            replay._doomed = {int(s) for s in data.get("doomed", [])}
            return cls(run=data["run"], store=data.get("store", ""), replay=replay,
                       views_at=float(data.get("views_at") or 0.0), best_model_failed=data.get("best_model_failed"))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def prepare_logdir(logdir: str) -> str:
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


def sync(store: Store, logdir: str, *, individuals: bool = False, views: bool = True, model_graph: bool = True,
         views_every: float = 0.0, threads: int = 8) -> SyncReport:
    """Bring ``logdir``'s TensorBoard views up to date with ``store``; idempotent and incremental.

    ``individuals``: also one HParams run per individual under ``individuals/`` (off by default: a
    run list of thousands hides the few runs that answer "how is it doing"; turned on later, it
    writes those of every individual already shown). ``views``: the lineage
    run (family tree, Figure 1, ancestry of the best). ``model_graph``: the best's module in
    ``the_best/``. ``views_every``: rewrite the lineage views at most this often (seconds;
    0 = whenever the number of individuals changed); a live run passes a minute or so.
    """
    started = time.perf_counter()
    logdir = prepare_logdir(logdir)
    report = SyncReport(logdir=logdir)
    run_record = read_run_record(store)
    run_id = _run_id(run_record)
    config, space = load_run(store)
    with locked(logdir):
        state = _State.load(logdir)
        if state is not None and state.run != run_id:
            raise ViewError(f"logdir {logdir} holds the views of another run ({state.store}); "
                            "use an empty folder for this one")
        report.rebuilt = _retire(logdir)
        committed = _committed_next(logdir)
        if state is None or state.replay.next_step != committed:
            state = _State(run=run_id, store=store.url, replay=replay_all(store, committed, threads))
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
                                  report.unreadable, typed=True)
            by_kill = deaths_by_kill(deaths)
            events = []  # serialized events: small, unlike the records (genomes), which go chunk by chunk
            for chunk in range(new.start, new.stop, CHUNK):
                steps_ = range(chunk, min(chunk + CHUNK, new.stop))
                records = read_records(store, [individual_key(s) for s in steps_], threads, report.unreadable,
                                       typed=True)
                for s in steps_:
                    t = replay.rows[-1].time if replay.rows else 0.0
                    replay.birth(Row.of(records[s]) if s in records else Row.unreadable(s, t))
                    for loser in by_kill.get(s, ()):
                        replay.death(loser)
                    events.append(_step_event(replay))
                del records
            name = f"events.out.tfevents.{new[0]:012d}.evolve-population-{new[-1]:012d}"
            with event_file(os.path.join(logdir, RUN_POPULATION), name, replay.rows[new[0]].time) as f:
                for event in events:
                    f.add_bytes(event)
            report.new = len(new)
            state.save(logdir)
        elif report.rebuilt:
            state.save(logdir)
        report.individuals = replay.next_step
        if individuals:
            report.hparams_runs = _write_hparams(store, logdir, replay, space, report, threads)
        best = replay.best()
        if best is not None:
            report.best_step, report.best_fitness = best.step, best.fitness
        if replay.next_step and (views or model_graph):
            _write_views(store, logdir, state, report, run_record, config, space, views, model_graph,
                         views_every)
    report.seconds = time.perf_counter() - started
    return report


def _step_event(replay: Replay) -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event

    row = replay.rows[-1]
    return Event(step=row.step, wall_time=row.time, summary=scalar_summary(replay.scalars())).SerializeToString()


# -- HParams ----------------------------------------------------------------------------------


def hparams_of(record: Individual, space: Any) -> dict[str, Any]:
    """The hyperparameters of one individual: its genome's stats, mutation, origin, parent, worker."""

    genome = record.genome
    out: dict[str, Any] = {
        "origin": record.origin or "",
        "mutation": (record.mutation.name or "") if record.mutation else "initial",
        "change": mutation_words(record.mutation.name, record.mutation.params) if record.mutation else "initial",
        "kind": str(genome.get("kind") or ""),
        "status": record.status or "",
        "worker": record.worker or "",
        "parent": record.parent if record.parent is not None else -1,
        "step": record.step,
    }
    if record.generation is not None:
        out["generation"] = record.generation
    if record.metrics.flops:
        out["flops"] = float(record.metrics.flops)
    try:
        stats = genome_from_json(genome).stats(tuple(space.input_shape), space.num_classes)
    except (GenomeError, KeyError, TypeError, ValueError):
        stats = {}
    for name, value in stats.items():
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def _write_hparams(store: Store, logdir: str, replay: Replay, space: Any, report: SyncReport, threads: int) -> int:
    """The HParams run of every individual the views include that has none yet (and a readable record);
    how many were written."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams.summary_v2 import hparams_pb

    root = os.path.join(logdir, RUN_INDIVIDUALS)
    have = {int(n) for n in (os.listdir(root) if os.path.isdir(root) else ())
            if n.isdigit() and os.path.exists(os.path.join(root, n, _HPARAMS_FILE.format(step=int(n))))}
    unreadable = {row.step for row in replay.rows if row.origin == "unreadable"}  # counted once, by the replay
    missing = [s for s in range(replay.next_step) if s not in have and s not in unreadable]
    written = 0
    for chunk in range(0, len(missing), CHUNK):
        keys = [individual_key(s) for s in missing[chunk:chunk + CHUNK]]
        for step, record in sorted(read_records(store, keys, threads, report.unreadable, typed=True).items()):
            if record is None:
                continue
            wall = num(record.created_at) or time.time()
            try:
                session = hparams_pb(hparams_of(record, space), trial_id=f"{step:06d}", start_time_secs=wall)
            except (TypeError, ValueError) as exc:
                report.errors.append(f"hparams of individual {step}: {exc}")
                continue
            metrics = {"individual/fitness": num(record.fitness),
                       "individual/val_accuracy": num(record.val_accuracy),
                       "individual/test_accuracy": num(record.test_accuracy),
                       "individual/train_seconds": num(record.metrics.train_seconds)}
            with event_file(os.path.join(root, f"{step:06d}"), _HPARAMS_FILE.format(step=step), wall,
                            durable=False) as f:
                f.add(Event(step=0, wall_time=wall, summary=session))
                f.add(Event(step=0, wall_time=wall,
                            summary=scalar_summary({k: v for k, v in metrics.items() if v is not None})))
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

    marks = finalize_marks(store) if views else []
    folder = os.path.join(logdir, RUN_LINEAGE)
    name = f"events.out.tfevents.{count:012d}.evolve-lineage" + (f"-f{len(marks)}" if marks else "")
    due = time.time() - state.views_at >= views_every
    if views and due and not os.path.exists(os.path.join(folder, name)):
        best_record = read_best_record(store, best.step) if best else None
        chain = replay.ancestry(best.step) if best else []
        png = figure_png(replay.rows, replay.live, chain, title=figure_title(config, replay.rows, replay.live, best),
                         t0=num(run_record.get("created_at")), marks=marks)
        text = ancestry_markdown(chain, best_record, replay.live)
        graph = family_graph(replay.rows, replay.live)
        wall = max(r.time for r in replay.rows)
        with event_file(folder, name, wall) as f:
            f.add(Event(step=count, wall_time=wall, graph_def=graph.SerializeToString()))
            f.add(Event(step=count, wall_time=wall, summary=Summary(value=[
                image_value("lineage/figure1", png),
                text_value("lineage/ancestry_of_best", text),
            ])))
        replace_older(folder, _LINEAGE_FILE, name)
        state.views_at = time.time()
        state.save(logdir)
        report.views = True

    if views and marks:
        _write_finalize(store, logdir, count, report)

    if model_graph and best is not None:
        folder = os.path.join(logdir, RUN_BEST)
        current = files_matching(folder, _BEST_FILE)
        shown = int(current[-1][1].group(2)) if current else None
        if shown == best.step or state.best_model_failed == best.step:
            return
        best_record = best_record or read_best_record(store, best.step)
        try:
            graph_def, run_metadata = _module_graph(best_record, space)
        except Exception as exc:  # noqa: BLE001 - a genome torch cannot trace is not fatal
            report.errors.append(f"best model graph of individual {best.step}: {type(exc).__name__}: {exc}")
            state.best_model_failed = best.step
            state.save(logdir)
            return
        name = f"events.out.tfevents.{count:012d}.evolve-best-{best.step:012d}"
        wall = best.time
        with event_file(folder, name, wall) as f:
            f.add(Event(step=best.step, wall_time=wall, graph_def=graph_def.SerializeToString()))
            f.add(Event(step=best.step, wall_time=wall, tagged_run_metadata=TaggedRunMetadata(
                tag=f"individual_{best.step}", run_metadata=run_metadata.SerializeToString())))
            f.add(Event(step=best.step, wall_time=wall, summary=Summary(value=[
                text_value("the_best/genome", genome_markdown(best_record))])))
        replace_older(folder, _BEST_FILE, name)
        report.best_model = True


def _write_finalize(store: Store, logdir: str, count: int, report: SyncReport) -> None:
    """The finalize run: one file named by what it shows, replaced when a stage is added."""
    import hashlib

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary


    rows = stage_rows(store)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = os.path.join(logdir, RUN_FINALIZE)
    name = f"events.out.tfevents.{count:012d}.evolve-finalize-{digest}"
    if os.path.exists(os.path.join(folder, name)):
        return
    scalars = {}
    for row in rows:
        figures = {"test_accuracy": row["test_accuracy"], "params": row["params"], "infer_ms": row["infer_ms"],
                   "mflops": None if row["flops"] is None else row["flops"] / 1e6,
                   "compute_seconds": row["compute_seconds"]}
        scalars.update({f"finalize/{row['stage']}/{k}": v for k, v in figures.items() if v is not None})
    wall = time.time()
    with event_file(folder, name, wall) as f:
        f.add(Event(step=count, wall_time=wall, summary=scalar_summary(scalars)))
        f.add(Event(step=count, wall_time=wall, summary=Summary(value=[text_value("finalize/table", markdown(rows))])))
    replace_older(folder, _FINALIZE_FILE, name)
    report.views = True


def _module_graph(record: dict[str, Any], space: Any) -> tuple[Any, Any]:
    """The GraphDef of the individual's decoded torch module, traced on a zero input of the run's shape."""
    import torch
    from torch.utils.tensorboard._pytorch_graph import graph  # what SummaryWriter.add_graph calls

    from evolve.training.train import build_module

    module = build_module(genome_from_json(record["genome"]), tuple(space.input_shape), space.num_classes, 0)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: fine here
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace: still what add_graph uses
        return graph(module, (torch.zeros(1, *space.input_shape),))
