"""`evolve status`, `best`, `lineage`, `check`: what a store holds, for people and (``--json``) for scripts.

Each reads through the API (``evolve.api.Run``); ``--json`` prints one object whose shape the
README documents (``format`` is its version).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from evolve.cli.console import (
    AsJson,
    StorageOptions,
    app,
    err,
    fail,
    guard,
    out,
    pct,
    print_json,
    storage_options,
    warn_unreadable,
)
from evolve.final.final_model import describe_final
from evolve.views.lineage import fitness_text
from genomes.words import mutation_words


def _open(store: str, options: str | None) -> Any:
    from evolve.api import open as open_run

    return open_run(store, storage_options(options))


@app.command()
@guard
def status(store: Annotated[str, typer.Argument(help="Store URL.")], storage_options_: StorageOptions = None,
           as_json: AsJson = False) -> None:
    """Steps done and in flight, live count, best and median fitness, throughput, per worker."""
    from rich.table import Table

    run = _open(store, storage_options_)
    info = run.status()
    warn_unreadable(run.unreadable)
    if as_json:
        return print_json("status", {"store": run.url, **info})
    out.print(f"{info['done']}/{info['total']} individuals ({info['in_flight']} in flight), {info['live']} live, "
              f"best {fitness_text(info['best_fitness'])}, median {fitness_text(info['median_fitness'])}, "
              f"{info['failed']} failed, {info['adopted']} adopted"
              + (f", {info['steps_per_hour']:.0f} steps/h" if info['steps_per_hour'] else "")
              + (f", {info['unreadable']} unreadable record{'s' if info['unreadable'] > 1 else ''} (evolve check "
                 "--repair)" if info["unreadable"] else ""))
    _print_finalized(info["finalize"])
    table = Table("worker", "steps", "adopted", "train s")
    for name, row in sorted(info["workers"].items()):
        table.add_row(name, str(row["steps"]), str(row["adopted"]), f"{row['train_s']:.1f}")
    out.print(table)


@app.command()
@guard
def best(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    genome: Annotated[bool, typer.Option("--genome", help="Also print the genome (JSON).")] = False,
    export: Annotated[Optional[str], typer.Option(help="Write the best's weights (safetensors, genome in metadata).")] = None,
    storage_options_: StorageOptions = None,
    as_json: AsJson = False,
) -> None:
    """The best individual: accuracies, size, mutations, compute; its genome with --genome."""
    import json


    run = _open(store, storage_options_)
    card = run.summary()
    warn_unreadable(run.unreadable)
    if "test_error" in card and not as_json:
        err.print(f"test accuracy not measured: {card['test_error']}", highlight=False)
    if as_json:
        print_json("best", {"store": run.url, **card, "unreadable": len(run.unreadable)})
    else:
        flops = f", {card['flops'] / 1e6:.2f} MFLOPs" if card.get("flops") else ""
        out.print(f"individual {card['step']} ({'live' if card['alive'] else 'dead'}): validation "
                  f"{pct(card['val_accuracy'])}, test {pct(card['test_accuracy'])}, {card['params'] or 0:,} "
                  f"parameters{flops}; {card['mutations']} mutations from its initial ancestor, whose lineage "
                  f"trained {card['lineage_batches']:,} batches; the run spent "
                  f"{card['compute_seconds'] / 60:.1f} worker-minutes", highlight=False)
        if card["final"]:
            out.print(describe_final(card["final"]), highlight=False)
        _print_finalized(card.get("finalize") or [])
        out.print(card["genome_summary"], highlight=False)
        if run.unreadable:
            out.print(f"{len(run.unreadable)} unreadable record{'s' if len(run.unreadable) > 1 else ''} skipped "
                      "(evolve check --repair)", highlight=False)
        if genome:
            out.print_json(json.dumps(card["genome"]))
    if export:
        try:
            run.save_weights(export)
        except OSError as exc:
            fail(f"--export: cannot write {export}: {exc.strerror or exc}")
        if not as_json:
            out.print(f"wrote {export}")


def _print_finalized(rows: list[dict]) -> None:
    if rows:
        out.print("finalize (test): " + ", ".join(f"{r['model'].split(' (')[0]} {pct(r['test_accuracy'])}" for r in rows),
                  highlight=False)


@app.command()
@guard
def lineage(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    individual: Annotated[Optional[int], typer.Argument(help="Step of the individual (default: the best).")] = None,
    storage_options_: StorageOptions = None,
    as_json: AsJson = False,
) -> None:
    """The ancestry of an individual, with the mutation at each step."""

    from rich.table import Table

    run = _open(store, storage_options_)
    chain = run.lineage(individual)
    warn_unreadable(run.unreadable)
    if not chain:
        fail("no individuals yet")
    rows = [{"step": r.step, "origin": r.origin, "mutation": r.mutation.name if r.mutation else None,
             "mutation_params": r.mutation.params if r.mutation else None, "params": r.metrics.params,
             "fitness": r.fitness} for r in chain]
    if as_json:
        return print_json("lineage", {"store": run.url, "step": chain[-1].step, "lineage": rows})
    table = Table("step", "mutation", "parameters", "fitness")
    for row in rows:
        mutation = mutation_words(row["mutation"], row["mutation_params"])
        table.add_row(str(row["step"]), mutation, f"{row['params'] or 0:,}", fitness_text(row["fitness"]))
    out.print(table)


@app.command()
@guard
def check(store: Annotated[str, typer.Argument(help="Store URL.")], storage_options_: StorageOptions = None,
          as_json: AsJson = False,
          repair: Annotated[bool, typer.Option("--repair", help="Move records that do not parse aside, into "
                                               "damaged/ (never deleting), so that their steps run again on "
                                               "`evolve resume`; say what moved.")] = False) -> None:
    """Verify the store's invariants; exit 1 on any violation."""
    from evolve.api import open as open_run

    run = open_run(store, storage_options(storage_options_))
    if repair:
        return _repair(run)
    report = run.check()
    if as_json:
        print_json("check", {"store": run.url, "ok": report.ok, "finished": report.finished,
                             "individuals": report.individuals, "live": report.live, "in_flight": report.in_flight,
                             "deaths": report.deaths, "violations": report.violations})
    else:
        for line in report.violations:
            err.print(f"[red]violation:[/] {line}", highlight=False)
        out.print(f"{report.individuals} individuals, {report.live} live, {report.in_flight} in flight, "
                  f"{report.deaths} deaths: {'ok' if report.ok else f'{len(report.violations)} violations'}"
                  + (" (finished)" if report.finished else ""))
    if not report.ok:
        raise typer.Exit(1)


def _repair(run: Any) -> None:
    """`evolve check --repair`: what moved, then what a resume will do; exit 1 if something could not be repaired."""
    damaged = run.check().damaged
    if not damaged:
        out.print(f"{run.url}: nothing to repair: every record parses")
        return
    report = run.repair(damaged)
    for line in report.lines():
        err.print(line, highlight=False)
    if report.left:
        fail(f"{len(report.left)} of {len(damaged)} damaged records could not be repaired (above)", code=1)
    then = f"; `evolve resume {run.url}` runs them again, and `evolve check` is clean after it" if report.rerun else ""
    out.print(f"{run.url}: repaired {len(damaged)} damaged record{'s' if len(damaged) > 1 else ''}{then}",
              highlight=False)
