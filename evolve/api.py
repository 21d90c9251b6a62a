"""evolve as a library: start, resume and read runs from Python; the command line is a layer over this.

::

    import evolve

    run = evolve.run(store="runs/from-python", population=10, steps=40, executor="local")  # returns when done
    print(run.status())                      # done, live, best fitness, failed, per worker ...
    best = run.best()                        # an evolve.store.records.Individual: step, fitness, genome, ...
    table = run.individuals()                # a pandas DataFrame, one row per individual (the export's columns)
    net = run.model(best.step)               # a torch.nn.Module with its trained weights, eval mode
    for ancestor in run.lineage(best.step):  # oldest first
        print(ancestor.step, ancestor.mutation and ancestor.mutation.name, ancestor.fitness)
    print(run.result())                      # the best's test accuracy, its final training, LeNet-5's line

    big = evolve.run(store="runs/big", steps=2000, wait=False)  # returns at once; the run goes on
    evolve.open("runs/big").status()         # read-only, any store, from any process, while it runs
    big.wait()

Settings are the config's fields (``evolve.config.RunConfig``) as keywords, over a ``preset`` and
a ``config_file`` (defaults < preset < file < keywords, as on the command line). Errors a user
can cause raise ``ConfigError``, ``DataError``, ``StoreError`` or ``GenomeError`` with one line
naming the field or file.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from evolve.config import ConfigError, RunConfig, build_config, is_table, load_config_file
from evolve.final.export_model import export_model
from evolve.final.final_model import compute_seconds, lineage_batches, measured_test_accuracy, summary
from evolve.final.finalize import Plan, finalize
from evolve.final.table import stage_rows
from evolve.final.table import table as results_table
from evolve.runner.drivers import Announcement, Driver, others
from evolve.runner.launch import open_run, run_in_process, run_on_ray
from evolve.runner.presets import missing_dataset, resolve
from evolve.runner.record import load_run, total_steps
from evolve.runner.stopping import GRACE_SECONDS
from evolve.store.backend import Store, StoreError
from evolve.store.check import check_store
from evolve.store.keys import individual_key, record_key_of_final
from evolve.store.records import Individual, parse
from evolve.store.repair import repair
from evolve.store.snapshot import Snapshot, status
from evolve.training.datasets import DataError
from evolve.training.fitness import FunctionEvaluator, import_fitness, name_of
from evolve.views.lineage import plot
from evolve.views.live import LiveSync
from evolve.views.parquet import table as parquet_table
from genomes import genome_from_json

__all__ = ["Run", "configure", "open", "resume", "run"]

log = logging.getLogger("evolve.api")

EXECUTORS = ("ray", "local")


def configure(config_file: str | None = None, *, preset: str | None = None, **settings: Any) -> RunConfig:
    """The config a run with these settings would use: defaults < preset < config file < ``settings``.

    A dataset that still needs its files (a CIFAR preset's) is refused here, naming what to give."""
    return resolve_settings(config_file, preset, settings, check_dataset=True)[0]


def resolve_settings(config_file: str | None, preset: str | None, settings: dict[str, Any],
                     check_dataset: bool = True) -> tuple[RunConfig, dict[str, Any], str | None]:
    """(the config, the settings it was built from, the preset's name): the settings are what a run
    at an existing store is checked against (a resume may change only some fields)."""

    data = load_config_file(config_file) if config_file else {}
    named = data.pop("preset", None)
    source = "--preset" if preset is not None else f"{config_file}: preset"
    preset = preset if preset is not None else named
    given = {k: v for k, v in settings.items() if v is not None}
    resolved = resolve(preset, data, given, source, config_file or "options")
    config = build_config(resolved, config_file or "options")
    if check_dataset and (missing := missing_dataset(preset, config.dataset)) is not None:
        raise ConfigError(missing)
    return config, resolved, preset


def run(config: RunConfig | None = None, *, config_file: str | None = None, preset: str | None = None,
        executor: str = "ray", wait: bool = True, logdir: str | None = None,
        on_progress: Callable[[int], None] | None = None, on_start: Callable[[Run], None] | None = None,
        grace: float = GRACE_SECONDS, **settings: Any) -> Run:
    """Start a run (or continue the one already at its store) and return it when done, or at once
    with ``wait=False`` (the run goes on in a thread of this process: ``wait()``, ``stop()``).

    ``config``: a ``RunConfig`` (``configure``), or else ``config_file``, ``preset`` and the config's
    fields as keywords. ``executor``: ``ray`` (a local Ray, or ``address``'s cluster) or ``local``
    (threads of this process). ``logdir`` keeps TensorBoard views as it goes; ``on_start(run)`` is
    called once the store is open, ``on_progress(done)`` with the individuals now in the store.
    Interrupted (Ctrl-C; SIGTERM and SIGHUP too within ``evolve.runner.stopping.stop_signals``), the steps
    in flight may finish within ``grace`` seconds, the rest are given up for adoption, and
    ``evolve.runner.stopping.Interrupted`` (a KeyboardInterrupt) says what was done."""
    _check_executor(executor)
    fn = settings.get("fitness") if callable(settings.get("fitness")) else None
    if fn is not None:
        settings = {**settings, "fitness": fitness_name(fn)}
    if config is None:
        config, overrides, _ = resolve_settings(config_file, preset, settings)
    elif settings or config_file or preset:
        raise ConfigError("run: give either a RunConfig or settings (config_file, preset, keywords), not both")
    else:
        overrides = config.model_dump()
    _check_fitness(config, fn, executor)
    store, config, _ = open_run(config, resume=False, overrides=overrides)
    return Run(store, config, fn)._start(executor, wait, logdir, on_progress, on_start, grace)


def resume(url: str, *, storage_options: dict[str, Any] | None = None, executor: str = "ray", wait: bool = True,
           logdir: str | None = None, on_progress: Callable[[int], None] | None = None,
           on_start: Callable[[Run], None] | None = None, grace: float = GRACE_SECONDS, **overrides: Any) -> Run:
    """Continue a stopped or killed run; steps in flight are adopted. ``overrides``: the fields a
    resume may change (``workers``, ``steps`` to extend it, ``address``, ...). ``grace``: as ``run``'s."""
    _check_executor(executor)
    fn = overrides.pop("fitness", None)
    if fn is not None and not callable(fn):
        raise ConfigError(f"fitness: a resume takes the run's own fitness; give a function only to resume a run "
                          f"whose fitness was given in-process, got {fn!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    store = Store.open(url, storage_options or {})
    _check_fitness(load_run(store)[0], fn, executor)
    store, config, _ = open_run(RunConfig(store=url, storage_options=storage_options or {}), resume=True,
                                overrides=given)
    return Run(store, config, fn)._start(executor, wait, logdir, on_progress, on_start, grace)


def fitness_name(fn: Callable[..., Any]) -> str:
    """What the config records for a fitness function: its importable name, else ``in-process:NAME``."""

    name = name_of(fn)
    if name is not None:
        return name
    label = re.sub(r"\W+", "_", getattr(fn, "__qualname__", "") or type(fn).__name__).strip("_") or "function"
    return f"in-process:{label if label[0].isalpha() or label[0] == '_' else 'f_' + label}"


def _check_fitness(config: RunConfig, fn: Callable[..., Any] | None, executor: str) -> None:
    """Before anything is written or started: a fitness named in the config must import here, and a
    function given in-process must be one the executor can call."""

    if config.fitness in ("train", "synthetic") or is_table(config.fitness):
        if fn is not None:
            raise ConfigError(f"fitness: the run at {config.store} trains with {config.fitness!r}, not a function")
        return
    in_process = config.fitness.startswith("in-process:")
    if in_process and fn is None:
        raise ConfigError(f"fitness: this run's fitness was a function given in-process "
                          f"({config.fitness.split(':', 1)[1]}) that no worker can import by name: resume it "
                          "from Python with evolve.resume(url, fitness=that_function, executor='local')")
    if fn is not None and not in_process and fitness_name(fn) != config.fitness:
        raise ConfigError(f"fitness: the run at {config.store} records fitness {config.fitness!r}; the function "
                          f"given is {fitness_name(fn)!r}: give none (workers import the recorded one) or that one")
    if in_process and executor != "local":
        raise ConfigError(f"fitness: {config.fitness.split(':', 1)[1]} has no importable name, so Ray workers "
                          "cannot import it: define it in an installed module, or give executor='local'")
    if fn is None:
        import_fitness(config.fitness)


def _check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise ConfigError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")


def open(url: str, storage_options: dict[str, Any] | None = None) -> Run:  # noqa: A001 - evolve.open reads well
    """The run at ``url``, read-only: live or finished, on any store."""
    store = Store.open(url, storage_options)
    return Run(store, load_run(store)[0])


class Run:
    """A run in a store: what it holds now (every call reads the store afresh), and the run itself
    when this process started it (:meth:`wait`, :meth:`stop`, :attr:`running`)."""

    def __init__(self, store: Store, config: RunConfig, fitness: Callable[..., Any] | None = None) -> None:
        self.store = store
        self.config = config
        self._fitness = fitness  # a fitness function given in-process (evolve.training.fitness)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self.views: Any = None  # with a logdir: the last sync's report (evolve.views.tensorboard.SyncReport)
        self.others: list[Driver] = []  # other drivers running the store when this one started
        self.unreadable: list[tuple[str, str]] = []  # records the last read skipped: (key, reason)

    @property
    def url(self) -> str:
        return self.store.url

    def __repr__(self) -> str:
        return f"<evolve.Run {self.url}: {self.config.genome}, {self.config.selection}, {self.total} individuals>"

    @property
    def total(self) -> int:
        """Individuals the finished run holds: the population and every step's child."""
        return total_steps(load_run(self.store)[0])

    # -- running ---------------------------------------------------------------------------------

    def _start(self, executor: str, wait: bool, logdir: str | None, on_progress: Callable[[int], None] | None,
               on_start: Callable[[Run], None] | None, grace: float = GRACE_SECONDS) -> Run:
        announcement = Announcement(self.store)
        self.others = announcement.open()  # another driver on the store: this one joins it (evolve.runner.drivers)
        try:
            return self._launch(executor, wait, logdir, on_progress, on_start, grace, announcement)
        except BaseException:
            if not self.running:  # nothing started, or it ended: its thread closed it, or nobody will
                announcement.close()
            raise

    def _launch(self, executor: str, wait: bool, logdir: str | None, on_progress: Callable[[int], None] | None,
                on_start: Callable[[Run], None] | None, grace: float, announcement: Announcement) -> Run:
        if self.others:
            log.info("another driver is running %s (%s): this one joins it as %d more workers", self.url,
                     self.others[0].line(), self.config.workers)
        if on_start is not None:
            on_start(self)
        runner = run_on_ray if executor == "ray" else run_in_process
        live = None
        if logdir:

            live = LiveSync(self.store, logdir)

        def progress(done: int) -> None:
            if on_progress:
                on_progress(min(done, total_steps(self.config)))
            if live:
                live(done)

        space = load_run(self.store)[1]
        options: dict[str, Any] = {}
        if self._fitness is not None and executor == "local":

            options["evaluator"] = FunctionEvaluator(self.config, space, self._fitness)

        def target() -> None:
            try:
                runner(self.store, self.config, space, on_progress=progress, stop=self._stop, grace=grace,
                       joined=bool(self.others), **options)
            except BaseException as exc:  # noqa: BLE001 - raised again by wait()
                self._error = exc
            finally:
                announcement.close()
                if live:
                    self.views = live.close()
                self._ended.set()

        if wait:
            target()
            self._raise()
            return self
        self._thread = threading.Thread(target=target, name=f"evolve-run-{self.url}", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._ended.is_set()

    def wait(self, timeout: float | None = None) -> Run:
        """Until the run this process started has ended (or ``timeout`` seconds); its error, if any, is
        raised. Interrupted (Ctrl-C), it asks the workers to finish their steps, waits for them and
        raises KeyboardInterrupt: the run stays resumable."""
        if self._thread is not None:
            try:
                self._ended.wait(timeout)  # an Event, not Thread.join: see run_in_process
            except KeyboardInterrupt:
                self._stop.set()
                self._ended.wait()
                raise
        self._raise()
        return self

    def stop(self) -> Run:
        """Ask the workers to finish their steps and return; the run stays resumable."""
        self._stop.set()
        return self.wait()

    def _raise(self) -> None:
        if self._error is not None and not self.running:
            error, self._error = self._error, None
            raise error

    # -- reading -----------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        """Every individual and tombstone now (read afresh); what it skipped is kept in ``unreadable``."""
        snapshot = Snapshot.read(self.store)
        self.unreadable = list(snapshot.unreadable)
        return snapshot

    def status(self) -> dict[str, Any]:
        """Counts and figures of the run now: done, total, in flight, live, best and median fitness, ...,
        and ``finalize``: the models ``evolve finalize`` recorded so far."""
        config = load_run(self.store)[0]
        return {**status(self._snapshot(), config.population, total_steps(config)), "finalize": self._finalized()}

    def _finalized(self) -> list[dict[str, Any]]:
        """The models ``evolve finalize`` recorded so far: stage, label, test accuracy, parameters."""

        return [{k: row[k] for k in ("stage", "model", "test_accuracy", "params")} for row in stage_rows(self.store)]

    def best(self, live_only: bool = False) -> Individual | None:
        """The individual with the highest fitness (of equals, the earliest), dead or alive."""
        record = self._snapshot().best(live_only)
        return None if record is None else parse(Individual, record)

    def individual(self, step: int) -> Individual:

        data = self.store.read_json(individual_key(step))
        if data is None:
            raise StoreError(f"individual {step} does not exist in {self.url}")
        return parse(Individual, data)

    def summary(self, step: int | None = None) -> dict[str, Any]:
        """Individual ``step``'s (default: the best's) figures, JSON-ready: step, alive, fitness, validation
        and test accuracy, parameters, FLOPs, mutations from its initial ancestor, the batches its
        lineage trained, the run's compute so far, its final model if one was trained, its genome (and,
        for the best, ``finalize``: the models ``evolve finalize`` made of it and the run).
        Only the test accuracy may be computed (once, then kept in the store); where the data
        cannot be read it is None and ``test_error`` says why."""

        snapshot = self._snapshot()
        data = snapshot.best() if step is None else snapshot.individuals.get(step)
        if data is None:
            raise StoreError(f"{self.url}: " + ("no individuals yet" if step is None else f"individual {step} does not exist"))
        record, config = parse(Individual, data), load_run(self.store)[0]
        out: dict[str, Any] = {"step": record.step, "alive": record.step not in snapshot.deaths,
                               "fitness": record.fitness, "val_accuracy": record.val_accuracy}
        try:
            out["test_accuracy"] = (measured_test_accuracy(self.store, config, data) if config.fitness == "train"
                                    else record.test_accuracy)
        except DataError as exc:  # the reader cannot reach the data: everything else still shows
            out.update(test_accuracy=None, test_error=str(exc))
        final = self.store.read_json(record_key_of_final(record.step))
        out.update(params=record.metrics.params, flops=record.metrics.flops,
                   mutations=len(snapshot.ancestry(record.step)) - 1,
                   lineage_batches=lineage_batches(snapshot, record.step),
                   compute_seconds=compute_seconds(snapshot),
                   final=final if final and final.get("status", "ok") == "ok" else None,
                   genome_summary=genome_from_json(record.genome).describe(), genome=record.genome)
        if step is None:
            out["finalize"] = self._finalized()
        return out

    def check(self) -> Any:
        """The store against docs/ARCHITECTURE.md's invariants (``evolve.store.check.CheckReport``: ``ok``,
        ``violations``, counts), as ``evolve check`` reports it."""

        config = load_run(self.store)[0]
        return check_store(self.store, config.population, total_steps(config))

    def repair(self, damaged: list[str] | None = None) -> Any:
        """Move the records that do not parse (``damaged``: as ``check().damaged`` lists them) aside, into
        ``damaged/``, so that a resume runs their steps again (``evolve.store.repair``); the report."""
        running = others(self.store)
        if running:  # its workers' views would keep the moved steps as done, and a tombstone could race a kill
            raise StoreError(f"{self.url}: a driver is running this store ({running[0].line()}); stop it before "
                             "repairing, then resume")
        return repair(self.store, self.check().damaged if damaged is None else damaged)

    def individuals(self) -> Any:
        """Every individual as a pandas DataFrame, the columns of ``evolve export`` (one row each)."""

        return parquet_table(self.store).to_pandas()

    def lineage(self, step: int | None = None) -> list[Individual]:
        """``step`` (default: the best) and its first-parent ancestors, oldest first."""
        snapshot = self._snapshot()
        if step is None:
            best = snapshot.best()
            if best is None:
                return []
            step = best["step"]
        if step not in snapshot.individuals:
            raise StoreError(f"individual {step} does not exist in {self.url}")
        return [parse(Individual, r) for r in snapshot.ancestry(step)]

    def model(self, step: int | None = None) -> Any:
        """Individual ``step``'s (default: the best's) network as a ``torch.nn.Module`` with its trained
        weights, in eval mode on the CPU."""
        from evolve.training.train import build_module, weights_from_bytes

        record = self.best() if step is None else self.individual(step)
        if record is None:
            raise StoreError(f"{self.url}: no individuals yet")
        blob = self.store.read_bytes(record.weights.key) if record.weights else None
        if blob is None:
            why = ("its weights were deleted (keep = 'needed' keeps the best keep_best and those still needed)"
                   if record.weights else "it has no stored weights (a synthetic fitness, or a failed child)")
            raise StoreError(f"{self.url}: individual {record.step}: {why}")
        space = load_run(self.store)[1]
        module = build_module(genome_from_json(record.genome), tuple(space.input_shape), space.num_classes, 0)
        module.load_state_dict(weights_from_bytes(blob))
        return module.eval()

    def save_weights(self, path: str, step: int | None = None) -> dict[str, str]:
        """Write individual ``step``'s (default: the best's) weights to ``path`` as safetensors, its genome
        and figures in the file's metadata (the best's final model where one was trained); the metadata."""
        import json

        from safetensors.torch import load, save

        card = self.summary(step)
        final = card["final"]
        info = final["weights"] if final else self.individual(card["step"]).weights
        key = info["key"] if isinstance(info, dict) else getattr(info, "key", None)
        data = self.store.read_bytes(key) if key else None
        if data is None:
            raise StoreError(f"{self.url}: individual {card['step']} has no stored weights")
        meta = {"genome": json.dumps(card["genome"]), "step": str(card["step"]),
                "test_accuracy": str(final["test_accuracy"] if final else card["test_accuracy"]),
                "final": str(bool(final))}
        if (val := (final or card).get("val_accuracy")) is not None:  # not measured once trained on
            meta["val_accuracy"] = str(val)
        if final:
            meta["final_training"] = "from scratch" if final.get("from") == "scratch" else "from its weights"
            meta["final_data"] = final.get("data", "train")
        with builtins.open(path, "wb") as fh:
            fh.write(save(load(data), metadata=meta))
        return meta

    def result(self, reference: bool | None = None, on_wait: Callable[[str], None] | None = None,
               on_stage: Callable[[str, int], Callable[[int], None]] | None = None) -> dict[str, Any] | None:
        """What ``evolve run`` prints at the end: the best's validation and test accuracy, parameters,
        FLOPs, its final training, the compute spent, and (``reference``; None: as the run's config says)
        LeNet-5 on the same split.
        Computed once (the best's test, the final training, LeNet-5) and kept in the store; None
        before the run has finished. Another process (a second driver) computing one of these is waited for,
        not repeated; ``on_wait`` is told so in one line. Each training is logged as it starts and ends (logger
        ``evolve.final``), and ``on_stage(what, batches)`` returns what is told the batches done as it goes."""

        config = load_run(self.store)[0]
        if self.status()["done"] < total_steps(config):
            return None
        reference = config.reference if reference is None else reference
        return summary(self.store, config, reference=reference, on_wait=on_wait, on_stage=on_stage)

    def finalize(self, *, on_stage: Callable[[str, bool], None] | None = None, executor: str = "local",
                 **plan: Any) -> list[dict[str, Any]]:
        """Turn the search's result into models to ship (``evolve.final.finalize``): the best retrained with
        snapshots, the snapshot and top-K ensembles, the ensemble distilled into the best architecture, the
        retrained model pruned (dna and gcnn runs; left out for a kind without channel pruning). ``plan``: ``batches``, ``cycles``, ``top``, ``temperature``,
        ``alpha``, ``prune_target``, ``prune_batches``, ``start`` ("scratch" or "weights"), ``stages``. Stages already
        recorded are not redone. ``executor`` "ray": each phase's trainings at once as Ray tasks with a
        worker's resources (the run's ``address``). Returns the results table, one dict per model."""

        config = load_run(self.store)[0]
        if config.fitness != "train":
            raise ConfigError(f"finalize: the run at {self.url} has fitness {config.fitness!r}; finalize retrains "
                              "on the run's dataset ('train' runs only)")
        try:
            chosen = Plan(**{"batches": config.final_batches or Plan.batches, **plan})
        except TypeError as exc:
            raise ConfigError(f"finalize: {exc}") from None
        except ValueError as exc:  # the plan's own check names the setting
            raise ConfigError(f"finalize: {exc}") from None
        if executor not in ("local", "ray"):
            raise ConfigError(f"finalize: executor must be 'local' or 'ray', got {executor!r}")
        from genomes.pruning import PRUNABLE  # torch: finalize trains anyway

        if "prune" in chosen.stages and config.genome not in PRUNABLE:
            if "stages" in plan:
                raise ConfigError(f"finalize: stage 'prune' needs channel groups, which genome {config.genome!r} "
                                  f"has not (only {', '.join(PRUNABLE)}): leave it out")
            chosen = dataclasses.replace(chosen, stages=tuple(s for s in chosen.stages if s != "prune"))
        finalize(self.store, config, chosen, on_stage, executor)
        return results_table(self.store, config)

    def export_model(self, out: str, model: str = "best", *, onnx: bool = False, force: bool = False) -> dict[str, Any]:
        """Write ``model`` (``best``, ``found``, or a finalize stage: ``retrain``, ``snapshots``, ``top``,
        ``distill``, ``prune``) to the folder ``out``, for use without evolve: safetensors and ``model.json``, loaded by
        ``genomes.exported.load_model``; ``model.onnx`` too with ``onnx``. Returns the manifest (its
        ``test_accuracy`` measured on the exported model, beside ``stored_test_accuracy``)."""

        return export_model(self.store, load_run(self.store)[0], out, model, onnx=onnx, force=force)

    def plot(self, path: str, **options: Any) -> Any:
        """Figure 1 of Real et al. 2017 for this run, written to ``path`` (PNG)."""

        return plot(self.store, path, **options)

