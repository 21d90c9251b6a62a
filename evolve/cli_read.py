"""`evolve status`, `best`, `lineage`, `check`: what a store holds, for people and (``--json``) for scripts."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from evolve.console import app, err, fail, genome_from_json_line, guard, open_store, out, pct, warn_unreadable


@app.command()
@guard
def status(store: Annotated[str, typer.Argument(help="Store URL.")]) -> None:
    """Steps done and in flight, live count, best and median fitness, throughput, per worker."""
    from rich.table import Table

    from evolve.report import Snapshot, status as run_status
    from evolve.launch import load_run, total_steps

    st = open_store(store)
    config, _ = load_run(st)
    snap = Snapshot.read(st)
    warn_unreadable(snap.unreadable)
    info = run_status(snap, config.population, total_steps(config))
    out.print(f"{info['done']}/{info['total']} individuals ({info['in_flight']} in flight), {info['live']} live, "
              f"best {pct(info['best_fitness'])}, median {pct(info['median_fitness'])}, "
              f"{info['failed']} failed, {info['adopted']} adopted"
              + (f", {info['steps_per_hour']:.0f} steps/h" if info['steps_per_hour'] else ""))
    table = Table("worker", "steps", "adopted", "train s")
    for name, row in sorted(info["workers"].items()):
        table.add_row(name, str(row["steps"]), str(row["adopted"]), f"{row['train_s']:.1f}")
    out.print(table)


@app.command()
@guard
def best(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    export: Annotated[Optional[str], typer.Option(help="Write the best's weights (safetensors, genome in metadata).")] = None,
) -> None:
    """The best individual: genome, accuracies, and optionally its weights."""
    import json

    from evolve.report import Snapshot

    st = open_store(store)
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
              f"validation {pct(record.get('val_accuracy'))}, test {pct(tested)}")
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
@guard
def lineage(
    store: Annotated[str, typer.Argument(help="Store URL.")],
    individual: Annotated[Optional[int], typer.Argument(help="Step of the individual (default: the best).")] = None,
) -> None:
    """The ancestry of an individual, with the mutation at each step."""
    import json

    from rich.table import Table

    from evolve.report import Snapshot

    snap = Snapshot.read(open_store(store))
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
                      pct(record.get("fitness")))
    out.print(table)


@app.command()
@guard
def check(store: Annotated[str, typer.Argument(help="Store URL.")]) -> None:
    """Verify the store's invariants; exit 1 on any violation."""
    from evolve.check import check_store
    from evolve.launch import load_run, total_steps

    st = open_store(store)
    config, _ = load_run(st)
    report = check_store(st, config.population, total_steps(config))
    for line in report.violations:
        err.print(f"[red]violation:[/] {line}", highlight=False)
    out.print(f"{report.individuals} individuals, {report.live} live, {report.in_flight} in flight, "
              f"{report.deaths} deaths: {'ok' if report.ok else f'{len(report.violations)} violations'}"
              + (" (finished)" if report.finished else ""))
    if not report.ok:
        raise typer.Exit(1)
