"""The `evolve` command line: a layer over the Python API (``evolve.api``). Its commands live in
this module (runs), ``evolve.cli.read`` (what a store holds) and ``evolve.cli.views`` (views)."""

from __future__ import annotations

import contextlib
import json
import random
import sys
from typing import Annotated, Literal, Optional

import typer

from evolve.api import resolve_settings
from evolve.cli.console import (
    GRACE_HELP,
    LOG_FILE_HELP,
    LOG_LEVEL_HELP,
    RunProgress,
    StorageOptions,
    app,
    err,
    fail,
    genome_app,
    guard,
    log_to,
    open_store,
    out,
    parse_shape,
    pct,
    print_summary,
    settings_from,
    storage_options,
    warn_unreadable,
)
from evolve.config import ConfigError, RunConfig, merge_settings
from evolve.runner.presets import missing_dataset, required_dataset
from evolve.runner.record import load_run
from evolve.runner.stopping import GRACE_SECONDS, Interrupted, received, stop_signals
from evolve.store.backend import Store
from evolve.store.doctor import doctor as run_doctor
from evolve.store.sweep import collect
from genomes import GenomeError, SearchSpace, genome_class
from genomes.hparams import parse_hparam_line

Selection = Literal["tournament", "aging", "random", "generational"]
Executor = Literal["ray", "local"]
HPARAM_HELP = ("NAME=SPEC, a hyperparameter gene every individual carries: NAME=log:1e-3..0.3 (a log-scaled "
               "float), NAME=0..0.5 (a float), NAME=16..128/16 (ints in steps), NAME=sgd,adam (a choice); "
               "repeatable. The built-in trainer reads optimizer, learning_rate, momentum, weight_decay, "
               "batch_size, label_smoothing, dropout, activation, init, batches, augment, shift.")
REFERENCE_HELP = ("After the search, train LeNet-5 on the same split for reference (the default; about a minute "
                  "of one core on the demo), or not.")
SET_HELP = ("KEY=VALUE for any config field, dotted for nested ones (train.batches=300, keep=all); "
            "repeatable; checked like the config file.")


def _default(field: str) -> str:
    """A field's default in an option's help (the option itself defaults to None: the config file or preset
    may set it)."""
    return f" (default: {RunConfig.model_fields[field].default}, unless the config or preset sets it)."


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


def hparams_from(lines: list[str]) -> dict[str, dict]:
    """``--hparam NAME=SPEC`` lines as a declaration in JSON form; ConfigError names a bad one."""
    declared = {}
    for line in lines:
        try:
            name, gene = parse_hparam_line(line)
        except GenomeError as exc:
            raise ConfigError(str(exc)) from None
        declared[name] = gene.to_json()
    return declared


@app.command()
@guard
def run(
    config_file: Annotated[Optional[str], typer.Option("--config", help="TOML, YAML or JSON config file.")] = None,
    store: Annotated[Optional[str], typer.Option(help="Store URL (path, file://, s3://, gs://, memory://)" + _default("store"))] = None,
    genome: Annotated[Optional[str], typer.Option(help="dna (Real et al.'s graphs), gcnn (Genetic CNN bitstrings), nb201 (NAS-Bench-201 cells), fixed (one network, genome_options.network, lenet5 by default, whose --hparam genes alone evolve), or package.module:Class (a genome class of your own).")] = None,
    hparam: Annotated[Optional[list[str]], typer.Option("--hparam", help=HPARAM_HELP)] = None,
    selection: Annotated[Optional[Selection], typer.Option(help="random: every child drawn uniformly (gcnn, nb201); generational: Genetic CNN's, gcnn only.")] = None,
    population: Annotated[Optional[int], typer.Option(help="Population size N" + _default("population"))] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers" + _default("workers"))] = None,
    steps: Annotated[Optional[int], typer.Option(help="Children to produce after the initial population"
                                                 + _default("steps"))] = None,
    dataset: Annotated[Optional[str], typer.Option(help="mnist-mini, digits, or cifar10:/cifar100:/mnist:/parquet: URL"
                                                   + _default("dataset"))] = None,
    seed: Annotated[Optional[int], typer.Option(help="Run seed" + _default("seed"))] = None,
    fitness: Annotated[Optional[str], typer.Option(
        help="train; table:PATH[#COLUMN] (a tabular benchmark, nb201: table:nb201-cifar10); "
             "module.path:function (your own); or synthetic (engine tests).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address ('auto' on a cluster).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="Fractional GPUs per worker.")] = None,
    executor: Annotated[Executor, typer.Option(help="ray, or local (threads in this process).")] = "ray",
    logdir: Annotated[Optional[str], typer.Option(help="Keep TensorBoard views of the run here as it goes.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)] = None,
    storage_options_: StorageOptions = None,
    preset: Annotated[Optional[str], typer.Option(
        help="A paper's settings: lse-cifar10, lse-cifar100, gcnn-mnist, gcnn-cifar10, or demo; "
             "the config file and the options given here override it.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config as JSON and exit; "
                                                             "creates no store.")] = False,
    log_level: Annotated[str, typer.Option(help=LOG_LEVEL_HELP)] = "warning",
    log_file: Annotated[Optional[str], typer.Option(help=LOG_FILE_HELP)] = None,
    grace: Annotated[float, typer.Option(min=0.0, help=GRACE_HELP)] = GRACE_SECONDS,
    reference: Annotated[Optional[bool], typer.Option("--reference/--no-reference", help=REFERENCE_HELP)] = None,
) -> None:
    """Start (or continue) an evolution run; with no options, a small demo on the embedded dataset (a search
    of 7-11 minutes on two cores). After the search: the best's test accuracy, its final training
    (final_batches, 4,000 on the demo: about a minute on two free cores) and LeNet-5 on the same split for
    reference (about 10 s; --no-reference skips it), each with a progress bar."""
    from evolve.api import run as start

    given = {"store": store, "genome": genome, "selection": selection, "population": population,
             "workers": workers, "steps": steps, "dataset": dataset, "seed": seed, "fitness": fitness,
             "address": address, "gpus_per_worker": gpus_per_worker, "reference": reference,
             "storage_options": storage_options(storage_options_) or None}
    given = merge_settings({k: v for k, v in given.items() if v is not None}, settings_from(set_))
    if hparam:
        given = merge_settings(given, {"hparams": hparams_from(hparam)})
    # defaults < preset < config file < options (--set last)
    config, _, named = resolve_settings(config_file, preset, given, check_dataset=not dry_run)
    if dry_run:
        shown = config.model_dump(mode="json", exclude={"storage_options"})
        if missing := missing_dataset(named, config.dataset):
            shown["dataset"] = f"REQUIRED: --dataset {required_dataset(named, config.dataset)}"
            err.print(f"note: {missing}", highlight=False)
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    with log_to(log_level, log_file), stop_signals():  # the stages after the search too: stopped, they resume
        with RunProgress() as progress:
            run_ = start(config_file=config_file, preset=preset, executor=executor, logdir=logdir,
                         on_start=progress.start, on_progress=progress.update, grace=grace, **given)
        summarise(run_, grace, progress.seconds)


@app.command()
@guard
def resume(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    workers: Annotated[Optional[int], typer.Option()] = None,
    steps: Annotated[Optional[int], typer.Option(help="New total of children (extends a run).")] = None,
    address: Annotated[Optional[str], typer.Option()] = None,
    executor: Annotated[Executor, typer.Option(help="ray, or local (threads in this process).")] = "ray",
    logdir: Annotated[Optional[str], typer.Option(help="Keep TensorBoard views of the run here as it goes.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE for a field a resume may change "
                                                      "(workers, steps, address, lease_seconds, ...); repeatable.")] = None,
    storage_options_: StorageOptions = None,
    log_level: Annotated[str, typer.Option(help=LOG_LEVEL_HELP)] = "warning",
    log_file: Annotated[Optional[str], typer.Option(help=LOG_FILE_HELP)] = None,
    grace: Annotated[float, typer.Option(min=0.0, help=GRACE_HELP)] = GRACE_SECONDS,
    reference: Annotated[Optional[bool], typer.Option("--reference/--no-reference", help=REFERENCE_HELP)] = None,
) -> None:
    """Continue a stopped or killed run from its store; steps in flight are adopted."""
    from evolve.api import resume as restart

    given = {"workers": workers, "steps": steps, "address": address, "reference": reference}
    overrides = merge_settings({k: v for k, v in given.items() if v is not None}, settings_from(set_))
    with log_to(log_level, log_file), stop_signals():
        with RunProgress(announce=False) as progress:
            run_ = restart(store, storage_options=storage_options(storage_options_), executor=executor,
                           logdir=logdir, on_start=progress.start, on_progress=progress.update, grace=grace,
                           **overrides)
        summarise(run_, grace, progress.seconds)


def summarise(run_, grace: float, search_seconds: float | None = None) -> None:
    """``print_summary``; stopped meanwhile (Ctrl-C, SIGTERM, SIGHUP), one line naming the store to resume."""
    try:
        print_summary(run_, search_seconds)
    except KeyboardInterrupt:
        done = run_.status()["done"]
        raise Interrupted(run_.url, done, run_.total, [], received(), grace) from None


@app.command()
@guard
def gc(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    storage_options_: StorageOptions = None,
    grace: Annotated[float, typer.Option(help="Seconds a dead individual's weights are kept.")] = 600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
) -> None:
    """Delete the weights nobody will read again (the run's collector keeps the same: live individuals, the
    best keep_best ever, pinned ones, and what steps in flight need), and finalize weights no record names."""
    opened = open_store(store, storage_options_)
    report = collect(opened, load_run(opened)[0].keep_best, grace_seconds=grace, dry_run=dry_run)
    warn_unreadable(report.unreadable)
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(report.removed)} weight files ({report.freed_bytes:,} bytes), kept {report.kept}")


@app.command()
@guard
def doctor(store: Annotated[Optional[str], typer.Argument(help="Store URL to test.")] = None,
           storage_options_: StorageOptions = None,
           genome: Annotated[Optional[str], typer.Option(help="Check a genome class instead: package.module:Class "
                                                        "(or a built-in kind) against the protocol.")] = None,
           input_shape: Annotated[str, typer.Option(help="With --genome: the networks' input, C,H,W.")] = "3,32,32",
           num_classes: Annotated[int, typer.Option(min=1, help="With --genome: the networks' outputs.")] = 10,
           max_params: Annotated[int, typer.Option(min=1, help="With --genome: the parameter bound.")] = 2_000_000,
           hparam: Annotated[Optional[list[str]], typer.Option("--hparam", help="With --genome: genes the "
                                                               "class carries, NAME=SPEC (as run's).")] = None,
           ) -> None:
    """Check that the backend really refuses a second create and lists fresh writes; with --genome, that a
    genome class keeps the protocol (genomes.checks)."""
    if genome is not None:
        return _doctor_genome(genome, SearchSpace(input_shape=parse_shape(input_shape), num_classes=num_classes,
                                                  max_params=max_params, hparams=hparams_from(hparam or [])))
    if store is None:
        fail("doctor: give a store URL to test, or --genome package.module:Class")
    report = run_doctor(Store.open(store, storage_options(storage_options_), create=True))
    for check_ in report.checks:
        mark = "[green]ok[/]" if check_.ok else "[red]FAIL[/]"
        out.print(f"{mark} {check_.name}: {check_.detail}", highlight=False)
    failed = len(report.failures)
    out.print(f"store {store}: " + (f"all {len(report.checks)} checks passed: evolve can run here" if report.ok
              else f"{failed or 'no'} of {len(report.checks)} checks failed: `evolve run` and `resume` refuse this store"),
              highlight=False)
    if not report.ok:
        raise typer.Exit(1)



def _doctor_genome(name: str, space: SearchSpace) -> None:
    from genomes.checks import check_genome

    results = check_genome(name, space)
    for check_ in results:
        mark = "[green]ok[/]" if check_.ok else "[red]FAIL[/]"
        out.print(f"{mark} {check_.name} ({check_.method}): {check_.detail}", highlight=False)
    failed = [c for c in results if not c.ok]
    out.print(f"genome {name}: " + (f"{len(failed)} of {len(results)} checks failed" if failed
                                    else f"all {len(results)} checks passed"), highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
@guard
def finalize(
    store: Annotated[str, typer.Argument(help="Store URL of a finished (or running) run.")],
    batches: Annotated[Optional[int], typer.Option(min=1, help="Batches per trained model (default: the run's "
                                                    "final_batches).")] = None,
    cycles: Annotated[int, typer.Option(min=1, help="Cosine cycles per training: a snapshot each.")] = 4,
    top: Annotated[int, typer.Option(min=2, help="Distinct architectures in the top-K ensemble.")] = 3,
    temperature: Annotated[float, typer.Option(min=1.0, help="Distillation's softmax temperature.")] = 4.0,
    prune_target: Annotated[float, typer.Option(min=0.01, max=0.99, help="The pruned model's parameters, at "
                                                "most, as a share of the retrained model's.")] = 0.5,
    prune_batches: Annotated[int, typer.Option(min=0, help="Fine-tuning batches after pruning.")] = 1000,
    start: Annotated[Literal["scratch", "weights"], typer.Option(help="Retrain (and train the top-K members) "
                                                                     "from scratch or from the weights as evolved "
                                                                     "(pinned meanwhile).")] = "scratch",
    stage: Annotated[Optional[list[str]], typer.Option(help="Only these stages (and what they need): retrain, "
                                                        "snapshots, top, distill, prune. Repeatable.")] = None,
    table: Annotated[Optional[str], typer.Option(help="Write the results table here (Parquet; default "
                                                  "./finalize-<store name>.parquet).")] = None,
    executor: Annotated[Executor, typer.Option(help="ray: each phase's trainings at once as Ray tasks, a "
                                                    "worker's resources each (the run's address).")] = "local",
    storage_options_: StorageOptions = None,
) -> None:
    """Models to ship from a run: the best retrained with snapshots, snapshot and top-K ensembles, distilled,
    pruned."""
    import os

    from rich.table import Table

    from evolve.api import open as open_run

    run = open_run(store, storage_options(storage_options_))
    plan = {"cycles": cycles, "top": top, "temperature": temperature, "prune_target": prune_target,
            "prune_batches": prune_batches, "start": start, **({"batches": batches} if batches else {})}
    if stage:
        plan["stages"] = tuple(stage)

    def announce(name: str, done_before: bool) -> None:
        err.print(f"finalize {name}: " + ("recorded before, kept" if done_before else "training ..."), highlight=False)

    from genomes.pruning import PRUNABLE  # torch: finalize trains anyway

    if not stage and run.config.genome not in PRUNABLE:
        err.print(f"finalize prune: left out ({run.config.genome} genomes have no channel pruning)", highlight=False)
    rows = run.finalize(on_stage=announce, executor=executor, **plan)
    shown = Table("model", "test", "parameters", "MFLOPs", "ms / image", "compute s")
    for row in rows:
        shown.add_row(row["model"], pct(row["test_accuracy"]), f"{row['params'] or 0:,}",
                      f"{(row['flops'] or 0) / 1e6:.2f}", "" if row["infer_ms"] is None else f"{row['infer_ms']:.3f}",
                      "" if row["compute_seconds"] is None else f"{row['compute_seconds']:.0f}")
    out.print(shown)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.abspath(table or "finalize-" + (run.url.rstrip("/").rsplit("/", 1)[-1] or "run") + ".parquet")
    tmp = os.path.join(os.path.dirname(path), f".tmp-finalize-{os.getpid()}.parquet")
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        fail(f"--table: cannot write {path}: {exc.strerror or exc}")
    out.print(f"wrote {path}", highlight=False)


ModelName = Literal["best", "found", "retrain", "snapshots", "top", "distill", "prune"]


@app.command("export-model")
@guard
def export_model(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    out_: Annotated[str, typer.Argument(metavar="OUT", help="Folder to write (safetensors, model.json).")],
    model: Annotated[ModelName, typer.Option(help="best: the best's final model where trained, else as found; found; "
                                                  "or a finalize stage's model.")] = "best",
    onnx: Annotated[bool, typer.Option("--onnx", help="Also write model.onnx, checked with onnxruntime "
                                                      "(pip install 'evolve[onnx]').")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it holds something.")] = False,
    storage_options_: StorageOptions = None,
) -> None:
    """A model for use without evolve: load it with genomes.exported.load_model(OUT) (torch and genomes only)."""
    from evolve.api import open as open_run

    manifest = open_run(store, storage_options(storage_options_)).export_model(out_, model, onnx=onnx, force=force)
    members = len(manifest["members"])
    what = "1 network" if members == 1 else f"an ensemble of {members} networks ({manifest['combine']})"
    stored = manifest["stored_test_accuracy"]
    out.print(f"wrote {what} to {out_}: test {pct(manifest['test_accuracy'])} exported"
              + (f", {pct(stored)} recorded" if stored is not None else "")
              + (f"; model.onnx within {manifest['onnx']['max_abs_diff']:.1g} of torch" if onnx else ""), highlight=False)
    if stored is not None and abs(manifest["test_accuracy"] - stored) * manifest["test_images"] >= 0.5:
        err.print("warning: the exported model's test accuracy differs from the recorded one (another device or "
                  "torch version than the run's)", highlight=False)


from evolve.cli import read, views  # noqa: E402,F401 - their commands join the app


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # `python -m evolve.cli.main ...`
    main()
