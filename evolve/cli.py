"""The `evolve` command line."""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from genomes import GenomeError, SearchSpace, genome_class

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evolve neural architectures.")
genome_app = typer.Typer(no_args_is_help=True, help="Inspect the genomes that evolve.")
app.add_typer(genome_app, name="genome")

# soft_wrap: a message stays one line however narrow the terminal (or a pipe's 80 columns)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, non-zero exit, no traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def warn_unreadable(unreadable) -> None:
    """One warning line per record a view skipped because it does not parse (`evolve check` reports them)."""
    for key, reason in unreadable:
        err.print(f"[yellow]warning:[/] skipped unreadable record {key}: {reason}", highlight=False)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(part) for part in text.lower().replace("x", ",").split(","))
    except ValueError:
        fail(f"--input-shape: expected C,H,W (e.g. 3,32,32), got {text!r}")
    return c, h, w


@genome_app.command("sample")
def genome_sample(
    kind: Annotated[str, typer.Option(help="Genome kind: dna or gcnn.")] = "dna",
    mutations: Annotated[int, typer.Option(min=0, help="Mutations applied to the initial individual.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    input_shape: Annotated[str, typer.Option(help="Input shape C,H,W.")] = "3,32,32",
    num_classes: Annotated[int, typer.Option(min=2)] = 10,
    max_params: Annotated[int, typer.Option(min=1)] = 2_000_000,
    max_flops: Annotated[int, typer.Option(min=0, help="Forward FLOPs per image (0: no bound).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the genome JSON.")] = False,
) -> None:
    """Draw an initial individual, mutate it, and print the genome, its parameters and FLOPs."""
    try:
        space = SearchSpace(input_shape=parse_shape(input_shape), num_classes=num_classes, max_params=max_params,
                            max_flops=max_flops)
        cls = genome_class(kind)
        rng = random.Random(seed)
        genome = cls.initial(rng, space)
        applied = []
        for _ in range(mutations):
            genome, mutation = genome.mutate(rng, space)
            applied.append(mutation)
    except GenomeError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(genome.to_json(), indent=2) + "\n")
        return
    for i, m in enumerate(applied, 1):
        out.print(f"{i:3d}. {m.name} {json.dumps(m.params)}", highlight=False)
    out.print_json(json.dumps(genome.to_json()))
    out.print(genome.describe(), highlight=False)
    shape, classes = space.input_shape, space.num_classes
    out.print(f"parameters: {genome.param_count(shape, classes):,}  FLOPs: {genome.flops(shape, classes):,}  "
              f"hash: {genome.content_hash()[:12]}")




# -- runs -------------------------------------------------------------------------------------

def _open_store(url: str, storage_options: dict | None = None):
    from evolve.store import Store

    return Store.open(url, storage_options or {}, create=False)


def _guard(fn):
    """Turn the engine's expected errors into one red line and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from evolve.launch import USER_ERRORS

        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err.print("interrupted: `evolve resume STORE` continues the run (a step left in flight is adopted)")
            raise typer.Exit(130)

    return wrapper


class _LogProgress:
    """Progress for a log file or a pipe: one plain line every ``every`` seconds and at the end.

    rich draws its bar only on a terminal; without one a long cluster run would stay silent.
    """

    def __init__(self, total: int, every: float = 30.0) -> None:
        self.total, self.every = total, every
        self.started = self.last = time.monotonic()
        self.first: int | None = None

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = done
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        eta = f", about {_duration((self.total - done) / rate)} left" if rate > 0 and done < self.total else ""
        err.print(f"evolving: {done}/{self.total} individuals ({100 * done / max(self.total, 1):.0f}%), "
                  f"{_duration(elapsed)} elapsed{eta}", highlight=False)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextlib.contextmanager
def _logging(level: str, file: str | None):
    """The engine's (and the workers') log lines on stderr and, with ``file``, in it; undone on exit."""
    from evolve.logsetup import configure, unconfigure

    try:
        handlers = configure(level, file)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"--log-file: cannot write {file!r}: {exc.strerror or exc}")
    try:
        yield
    finally:
        unconfigure(handlers)


LOG_LEVEL_HELP = "Log lines shown (the workers' too): debug, info, warning or error."
LOG_FILE_HELP = "Also append the log lines (the workers' too) to this file."


class _Progress:
    """The run's progress on stderr: a bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # say what the store runs first (a new run; a resume's user knows)
        self.stack = contextlib.ExitStack()
        self.show: Any = None
        self.total = 0

    def __enter__(self) -> _Progress:
        return self

    def start(self, run: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        config = run.config
        if self.announce:
            err.print(f"store {run.url}: {config.genome} genomes, {config.selection} selection, population "
                      f"{config.population}, {config.steps} steps, {config.workers} workers, "
                      f"dataset {config.dataset}")
        self.total = run.total
        if err.is_terminal:
            bar = self.stack.enter_context(Progress(TextColumn("[bold]evolving"), BarColumn(), MofNCompleteColumn(),
                                                    TimeElapsedColumn(), console=err, transient=False))
            task = bar.add_task("steps", total=self.total)
            self.show = lambda done, force=False: bar.update(task, completed=done)
        else:
            self.show = _LogProgress(self.total).update

    def update(self, done: int) -> None:
        if self.show is not None:
            self.show(min(done, self.total))

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is None and self.show is not None:
            self.show(self.total, force=True)
        self.stack.close()


def _print_summary(run: Any) -> None:
    from evolve.report import Snapshot
    from evolve.result import describe_final

    if run.views is not None:
        err.print(f"tensorboard: {run.views.line()}", highlight=False)
    config = run.config
    warn_unreadable(Snapshot.read(run.store).unreadable)
    info = run.status()
    out.print(f"run at {run.url}: {info['done']}/{info['total']} individuals, {info['live']} live, "
              f"{info['failed']} failed")
    if info["done"] < info["total"]:
        return
    if config.fitness == "train":
        start = "its architecture from scratch" if config.final_from == "scratch" else "it from its weights"
        further = (f", training {start} {config.final_batches:,} batches on {config.final_data}"
                   if config.final_batches else "")
        err.print(f"testing the best{further} and LeNet-5 on the same split for reference ...", highlight=False)
    result = run.result()
    if result is None:
        return
    flops = f", {result['flops'] / 1e6:.2f} MFLOPs" if result.get("flops") else ""
    out.print(f"best individual {result['step']}: validation {_pct(result['val_accuracy'])}, "
              f"test {_pct(result['test_accuracy'])}, {result['params'] or 0:,} parameters{flops}", highlight=False)
    out.print(genome_from_json_line(result["genome"]), highlight=False)
    final = result.get("final")
    if final and final.get("status") == "failed":
        out.print(f"final training of the best failed ({final.get('reason')}); the best as found stands")
        final = None
    if final:
        out.print(f"{describe_final(final)}; {final['train_seconds']:.0f} s", highlight=False)
    before = " before the final training" if final and final.get("from", "weights") == "weights" else ""
    out.print(f"initial population's best validation {_pct(result['initial_best_val'])}; the best's lineage "
              f"trained {result['lineage_batches']:,} batches{before}; "
              "the run spent "
              f"{result['compute_seconds'] / 60:.1f} worker-minutes (core or GPU) on {result['individuals']} "
              "individuals", highlight=False)
    lenet = result.get("lenet5")
    if lenet:
        out.print(f"reference: LeNet-5 (batch norm, one-cycle SGD, shifts; {lenet['batches']:,} batches, "
                  f"{lenet['train_seconds']:.0f} s) on the same split: validation {_pct(lenet['val_accuracy'])}, "
                  f"test {_pct(lenet['test_accuracy'])}, {lenet['params']:,} parameters", highlight=False)


def genome_from_json_line(data: dict) -> str:
    from genomes import genome_from_json

    return genome_from_json(data).describe()


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


@app.command()
@_guard
def run(
    config_file: Annotated[Optional[str], typer.Option("--config", help="TOML, YAML or JSON config file.")] = None,
    store: Annotated[Optional[str], typer.Option(help="Store URL (path, file://, s3://, gs://, memory://).")] = None,
    genome: Annotated[Optional[str], typer.Option(help="dna or gcnn.")] = None,
    selection: Annotated[Optional[str], typer.Option(help="tournament, aging or generational.")] = None,
    population: Annotated[Optional[int], typer.Option(help="Population size N.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Children to produce after the initial population.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="mnist-mini, digits, or cifar10:/cifar100:/mnist:/parquet: URL.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Run seed.")] = None,
    fitness: Annotated[Optional[str], typer.Option(help="train, or synthetic (engine tests).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address ('auto' on a cluster).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="Fractional GPUs per worker.")] = None,
    executor: Annotated[str, typer.Option(help="ray, or local (threads in this process).")] = "ray",
    logdir: Annotated[Optional[str], typer.Option(help="Keep TensorBoard views of the run here as it goes.")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help="A paper's settings: lse-cifar10, lse-cifar100, gcnn-mnist, gcnn-cifar10, or demo; "
             "the config file and the options given here override it.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit; "
                                                             "creates no store.")] = False,
    log_level: Annotated[str, typer.Option(help=LOG_LEVEL_HELP)] = "warning",
    log_file: Annotated[Optional[str], typer.Option(help=LOG_FILE_HELP)] = None,
) -> None:
    """Start (or continue) an evolution run; with no options, a small demo on the embedded dataset."""
    from evolve.api import resolve_settings
    from evolve.api import run as start
    from evolve.presets import missing_dataset, required_dataset

    given = {"store": store, "genome": genome, "selection": selection, "population": population,
             "workers": workers, "steps": steps, "dataset": dataset, "seed": seed, "fitness": fitness,
             "address": address, "gpus_per_worker": gpus_per_worker}
    # defaults < preset < config file < options
    config, _, named = resolve_settings(config_file, preset, given, check_dataset=not dry_run)
    if dry_run:
        shown = config.model_dump(mode="json", exclude={"storage_options"})
        if missing := missing_dataset(named, config.dataset):
            shown["dataset"] = f"REQUIRED: --dataset {required_dataset(named, config.dataset)}"
            err.print(f"note: {missing}", highlight=False)
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    with _logging(log_level, log_file), _Progress() as progress:
        run_ = start(config_file=config_file, preset=preset, executor=executor, logdir=logdir,
                     on_start=progress.start, on_progress=progress.update, **given)
    _print_summary(run_)


@app.command()
@_guard
def resume(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    workers: Annotated[Optional[int], typer.Option()] = None,
    steps: Annotated[Optional[int], typer.Option(help="New total of children (extends a run).")] = None,
    address: Annotated[Optional[str], typer.Option()] = None,
    executor: Annotated[str, typer.Option(help="ray or local.")] = "ray",
    logdir: Annotated[Optional[str], typer.Option(help="Keep TensorBoard views of the run here as it goes.")] = None,
    log_level: Annotated[str, typer.Option(help=LOG_LEVEL_HELP)] = "warning",
    log_file: Annotated[Optional[str], typer.Option(help=LOG_FILE_HELP)] = None,
) -> None:
    """Continue a stopped or killed run from its store; steps in flight are adopted."""
    from evolve.api import resume as restart

    with _logging(log_level, log_file), _Progress(announce=False) as progress:
        run_ = restart(store, executor=executor, logdir=logdir, on_start=progress.start,
                       on_progress=progress.update, workers=workers, steps=steps, address=address)
    _print_summary(run_)


@app.command()
@_guard
def status(store: Annotated[str, typer.Argument(help="Store URL.")]) -> None:
    """Steps done and in flight, live count, best and median fitness, throughput, per worker."""
    from rich.table import Table

    from evolve.report import Snapshot, status as run_status
    from evolve.launch import load_run, total_steps

    st = _open_store(store)
    config, _ = load_run(st)
    snap = Snapshot.read(st)
    warn_unreadable(snap.unreadable)
    info = run_status(snap, config.population, total_steps(config))
    out.print(f"{info['done']}/{info['total']} individuals ({info['in_flight']} in flight), {info['live']} live, "
              f"best {_pct(info['best_fitness'])}, median {_pct(info['median_fitness'])}, "
              f"{info['failed']} failed, {info['adopted']} adopted"
              + (f", {info['steps_per_hour']:.0f} steps/h" if info['steps_per_hour'] else ""))
    table = Table("worker", "steps", "adopted", "train s")
    for name, row in sorted(info["workers"].items()):
        table.add_row(name, str(row["steps"]), str(row["adopted"]), f"{row['train_s']:.1f}")
    out.print(table)


@app.command()
@_guard
def best(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    export: Annotated[Optional[str], typer.Option(help="Write the best's weights (safetensors, genome in metadata).")] = None,
) -> None:
    """The best individual: genome, accuracies, and optionally its weights."""
    import json

    from evolve.report import Snapshot

    st = _open_store(store)
    snap = Snapshot.read(st)
    warn_unreadable(snap.unreadable)
    record = snap.best()
    if record is None:
        fail(f"{st.url}: no individuals yet")
    from evolve.data import DataError
    from evolve.keys import record_key_of_final
    from evolve.result import describe_final, measured_test_accuracy
    from evolve.launch import load_run

    config, _ = load_run(st)
    try:
        tested = measured_test_accuracy(st, config, record) if config.fitness == "train" else record.get("test_accuracy")
    except DataError as exc:  # the viewer cannot reach the data: everything else still shows
        err.print(f"test accuracy not measured: {exc}", highlight=False)
        tested = None
    out.print(f"individual {record['step']} ({'live' if record['step'] not in snap.deaths else 'dead'}): "
              f"validation {_pct(record.get('val_accuracy'))}, test {_pct(tested)}")
    final = st.read_json(record_key_of_final(record["step"]))
    final = final if final and final.get("status", "ok") == "ok" else None
    if final:
        out.print(describe_final(final), highlight=False)
    out.print(genome_from_json_line(record["genome"]), highlight=False)
    out.print_json(json.dumps(record["genome"]))
    if export:
        info = (final or record).get("weights")
        data = st.read_bytes(info["key"]) if info else None
        if data is None:
            fail(f"individual {record['step']} has no stored weights")
        from safetensors.torch import load, save

        tensors = load(data)
        meta = {"genome": json.dumps(record["genome"]), "step": str(record["step"]),
                "test_accuracy": str(final["test_accuracy"] if final else tested), "final": str(bool(final))}
        if (val := (final or record).get("val_accuracy")) is not None:  # not measured once trained on
            meta["val_accuracy"] = str(val)
        if final:
            meta["final_training"] = "from scratch" if final.get("from") == "scratch" else "from its weights"
            meta["final_data"] = final.get("data", "train")
        with open(export, "wb") as fh:
            fh.write(save(tensors, metadata=meta))
        out.print(f"wrote {export}")


@app.command()
@_guard
def lineage(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    individual: Annotated[Optional[int], typer.Argument(help="Step of the individual (default: the best).")] = None,
) -> None:
    """The ancestry of an individual, with the mutation at each step."""
    import json

    from rich.table import Table

    from evolve.report import Snapshot

    snap = Snapshot.read(_open_store(store))
    warn_unreadable(snap.unreadable)
    if individual is None:
        best_record = snap.best()
        if best_record is None:
            fail("no individuals yet")
        individual = best_record["step"]
    if individual not in snap.individuals:
        fail(f"individual {individual} does not exist in {store}")
    table = Table("step", "mutation", "parameters", "fitness")
    for record in snap.ancestry(individual):
        m = record.get("mutation")
        mutation = "initial" if m is None else f"{m['name']} {json.dumps(m.get('params', {}))}"
        table.add_row(str(record["step"]), mutation, f"{record['metrics'].get('params', 0):,}",
                      _pct(record.get("fitness")))
    out.print(table)


@app.command()
@_guard
def check(store: Annotated[str, typer.Argument(help="Store URL.")]) -> None:
    """Verify the store's invariants; exit 1 on any violation."""
    from evolve.check import check_store
    from evolve.launch import load_run, total_steps

    st = _open_store(store)
    config, _ = load_run(st)
    report = check_store(st, config.population, total_steps(config))
    for line in report.violations:
        err.print(f"[red]violation:[/] {line}", highlight=False)
    out.print(f"{report.individuals} individuals, {report.live} live, {report.in_flight} in flight, "
              f"{report.deaths} deaths: {'ok' if report.ok else f'{len(report.violations)} violations'}"
              + (" (finished)" if report.finished else ""))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_guard
def gc(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    grace: Annotated[float, typer.Option(help="Seconds a dead individual's weights are kept.")] = 600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
) -> None:
    """Delete weights that no live individual or pending step needs."""
    from evolve.gc import collect

    report = collect(_open_store(store), grace_seconds=grace, dry_run=dry_run)
    warn_unreadable(report.unreadable)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(report.removed)} weight files ({report.freed_bytes:,} bytes), kept {report.kept}")


@app.command()
@_guard
def doctor(store: Annotated[str, typer.Argument(help="Store URL to test.")]) -> None:
    """Check that the backend really refuses a second create and lists fresh writes."""
    from evolve.doctor import doctor as run_doctor
    from evolve.store import Store

    report = run_doctor(Store.open(store, {}, create=True))
    for check_ in report.checks:
        mark = "[green]ok[/]" if check_.ok else "[red]FAIL[/]"
        out.print(f"{mark} {check_.name}: {check_.detail}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


# -- views: TensorBoard, the Figure-1 picture, Parquet ----------------------------------------------


def _views_guard(fn):
    """_guard, plus the views' own one-line errors (a logdir of another run, an unwritable file)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from evolve.export import ExportError
        from evolve.tensorboard import ViewError

        try:
            return fn(*args, **kwargs)
        except (ViewError, ExportError) as exc:
            fail(str(exc))

    return wrapper


@app.command()
@_guard
@_views_guard
def tensorboard(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    logdir: Annotated[Optional[str], typer.Option(help="TensorBoard logdir (default: ./tb-<store name>).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Start TensorBoard and keep the logdir in sync until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TensorBoard's port with --serve (0: any free one).")] = 6006,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between syncs with --serve.")] = 5.0,
    hparams: Annotated[bool, typer.Option(help="One HParams run per individual.")] = True,
    model_graph: Annotated[bool, typer.Option(help="The best's torch module in the Graphs dashboard.")] = True,
) -> None:
    """Write TensorBoard views of a run (scalars, lineage, Figure 1, HParams), incrementally; --serve shows them."""
    import os

    from evolve.serve import serve as serve_views
    from evolve.tensorboard import sync

    st = _open_store(store)
    if logdir is None:
        logdir = os.path.join(os.getcwd(), "tb-" + (st.url.rstrip("/").rsplit("/", 1)[-1] or "run"))
    options = {"hparams": hparams, "model_graph": model_graph}

    def show(report) -> None:
        err.print(f"{report.logdir}: {report.line()}", highlight=False)
        warn_unreadable(report.unreadable)
        for line in report.errors:
            err.print(f"[yellow]warning:[/] {line}", highlight=False)

    if not serve:
        show(sync(st, logdir, **options))
        return
    if port == 0:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    err.print(f"serving {logdir} at http://127.0.0.1:{port}/ (syncing every {interval:g}s; Ctrl-C to stop)",
              highlight=False)
    code = serve_views(st, logdir, port=port, interval=interval, on_sync=show, **options)
    if code:
        fail(f"tensorboard exited with code {code}")


@app.command()
@_guard
@_views_guard
def plot(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    out_png: Annotated[str, typer.Argument(metavar="OUT.png", help="Where to write the picture.")],
    width: Annotated[float, typer.Option(min=2, help="Inches.")] = 10.0,
    height: Annotated[float, typer.Option(min=2, help="Inches.")] = 6.0,
    dpi: Annotated[int, typer.Option(min=30, max=600)] = 150,
) -> None:
    """Figure 1 of Real et al.: every individual's fitness over time, the best's line of descent."""
    from evolve.lineage import plot as plot_run

    report = plot_run(_open_store(store), out_png, size=(width, height), dpi=dpi)
    warn_unreadable(report.unreadable)
    out.print(f"wrote {report.path} ({report.width}x{report.height}): {report.individuals} individuals, "
              f"{report.alive} alive, best {report.best_step}", highlight=False)


@app.command("export")
@_guard
@_views_guard
def export_(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    out_parquet: Annotated[str, typer.Argument(metavar="OUT.parquet", help="Where to write the table.")],
) -> None:
    """Every individual as a row of a Parquet file (pandas, pyarrow, DuckDB, polars read it as is)."""
    from evolve.export import export_parquet

    report = export_parquet(_open_store(store), out_parquet)
    warn_unreadable(report.unreadable)
    out.print(f"wrote {report.path}: {report.rows} individuals ({report.alive} alive), {report.bytes:,} bytes",
              highlight=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # `python -m evolve.cli ...`
    main()
