"""Pictures of a run's lineage, drawn from its replay (``evolve.views.history``): the family tree as a graph,
the line of descent of the best as a table, and Figure 1 of Real et al. 2017 (``plot``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from evolve.final.final_model import describe_final, kept_results
from evolve.final.table import marks as finalize_marks
from evolve.runner.record import load_run, read_run_record
from evolve.store.backend import Store
from evolve.store.keys import individual_key, step_of
from evolve.store.snapshot import best_step, read_records
from evolve.views.history import Row, ViewError, num, rows_ancestry
from genomes import GenomeError, genome_from_json
from genomes.words import mutation_words

TMP_PREFIX = ".tmp-"  # never contains "tfevents": TensorBoard ignores it until it is renamed


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes."""
    import struct

    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def read_best_record(store: Store, step: int) -> dict[str, Any] | None:
    """The best's record with its kept test accuracy and final model (``evolve.final.final_model``), if any yet."""

    record = store.read_json(individual_key(step))
    return kept_results(store, record) if record is not None else None


def _final_line(record: dict[str, Any]) -> str:
    final = record.get("final") or {}
    if final.get("status") != "ok":
        return ""

    return f"; {describe_final(final)}"


def genome_markdown(record: dict[str, Any]) -> str:

    return (f"**Individual {record['step']}**: fitness {_pct(record.get('fitness'))}, test "
            f"{_pct(record.get('test_accuracy'))}, {(record.get('metrics') or {}).get('params', 0):,} parameters"
            f"{_final_line(record)}\n\n"
            f"`{genome_from_json(record['genome']).describe()}`\n\n"
            f"```\n{json.dumps(record['genome'], indent=1)}\n```")


def _pct(value: Any) -> str:
    value = num(value)
    return "n/a" if value is None else f"{100 * value:.2f}%"


def fitness_text(value: Any) -> str:
    """A fitness for people: a share in [0, 1] (an accuracy) as a percentage, anything else as it is
    (a table's metric already in percent, your own fitness's units)."""
    value = num(value)
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}%" if 0.0 <= value <= 1.0 else f"{value:.4g}"


def _fitness_delta(value: float, previous: float) -> str:
    both_shares = 0.0 <= value <= 1.0 and 0.0 <= previous <= 1.0
    return f"{100 * (value - previous):+.2f}" if both_shares else f"{value - previous:+.4g}"


def ancestry_markdown(chain: list[dict[str, Any]], best_record: dict[str, Any] | None, live: set[int]) -> str:
    """The line of descent of the best as a markdown table (oldest first)."""
    if not chain:
        return "no individuals yet"
    best = chain[-1]
    test = best.test_accuracy if best_record is None or best_record.get("test_accuracy") is None \
        else best_record["test_accuracy"]
    lines = [(f"**Best individual: step {best.step}** ({'alive' if best.step in live else 'dead'}), fitness "
              f"{fitness_text(best.fitness)}, test {_pct(test)}, {best.params or 0:,} parameters, "
              f"{len(chain) - 1} ancestors back to the initial population"
              f"{_final_line(best_record) if best_record else ''}")]
    if best_record is not None:

        with contextlib.suppress(GenomeError, KeyError, TypeError, ValueError):
            lines.append(f"\n`{genome_from_json(best_record['genome']).describe()}`")
    lines.append("\n| generation | step | mutation | parameters | fitness | Δ fitness |")
    lines.append("|---:|---:|---|---:|---:|---:|")
    previous: float | None = None
    for i, row in enumerate(chain):
        mutation = mutation_words(row.mutation, row.mutation_params) if row.mutation else row.origin or "initial"
        delta = "" if previous is None or row.fitness is None else _fitness_delta(row.fitness, previous)
        lines.append(f"| {i} | {row.step} | {mutation} | {row.params or 0:,} | {fitness_text(row.fitness)} | {delta} |")
        previous = row.fitness if row.fitness is not None else previous
    return "\n".join(lines)


def _scope(row: dict[str, Any], total: int, generational: bool) -> str:
    """Name scopes that keep the Graphs dashboard readable: generations, or blocks of 100 (and 1,000) steps."""
    if generational:
        return f"generation_{int(row.generation or 0):04d}/"
    s = row.step
    hundred = f"steps_{s // 100 * 100:06d}-{s // 100 * 100 + 99:06d}/"
    if total > 1000:
        return f"steps_{s // 1000 * 1000:06d}-{s // 1000 * 1000 + 999:06d}/" + hundred
    return hundred


def node_name(row: dict[str, Any], total: int, generational: bool) -> str:
    # "step42", not "step_42": TensorBoard folds names ending in _<digits> into series nodes
    return f"{_scope(row, total, generational)}step{row.step}"


def family_graph(rows: list[dict[str, Any]], live: set[int]) -> Any:
    """The family tree as a GraphDef: a node per individual (op = mutation, device = /alive or /dead),
    inputs = its parents, attrs = step, mutation, its params, fitness, test accuracy, parameters."""
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef

    generational = any(r.origin == "generation" for r in rows)
    total = len(rows)
    names = {row.step: node_name(row, total, generational) for row in rows}  # a parent may have a later step
    nodes = []
    for row in rows:
        s = row.step
        op = row.mutation or row.origin or "initial"
        attr = {
            "step": AttrValue(i=s),
            "mutation": AttrValue(s=op.encode()),
            "alive": AttrValue(b=s in live),
            "status": AttrValue(s=str(row.status or "").encode()),
            "created_at": AttrValue(i=int(row.time)),  # unix seconds (f would be float32)
        }
        if row.mutation_params:
            attr["mutation_params"] = AttrValue(s=json.dumps(row.mutation_params, sort_keys=True).encode())
        if row.fitness is not None:
            attr["fitness"] = AttrValue(f=row.fitness)
        if row.test_accuracy is not None:
            attr["test_accuracy"] = AttrValue(f=row.test_accuracy)
        if row.params is not None:
            attr["params"] = AttrValue(i=int(row.params))
        nodes.append(NodeDef(name=names[s], op=op, input=[names[p] for p in row.parents if p in names],
                             device="/alive" if s in live else "/dead", attr=attr))
    return GraphDef(node=nodes)


def figure_title(config: Any, rows: list[dict[str, Any]], live: set[int], best: dict[str, Any] | None) -> str:
    head = (f"{config.genome} · {config.selection} selection · population {config.population} · "
            f"{config.dataset if config.fitness == 'train' else 'synthetic fitness'}")
    tail = f"{len(rows):,} individuals, {len(live):,} alive"
    if best is not None and best.fitness is not None:
        tail += f", best {fitness_text(best.fitness)} (step {best.step})"
    return head + "\n" + tail


# -- the picture ----------------------------------------------------------------------------


MARKERS = ("D", "P", "X", "s", "^", "v", "p")  # finalize's models, beside the best


def figure_png(rows: list[dict[str, Any]], live: set[int], chain: list[dict[str, Any]], title: str = "",
               t0: float | None = None, size: tuple[float, float] = (10.0, 6.0), dpi: int = 100,
               marks: list[tuple[str, float]] = ()) -> bytes:
    """Figure 1 of Real et al. 2017: every individual (x = wall time, y = fitness), dead grey, alive in
    colour, the best's line of descent drawn through them; ``marks`` (label, test accuracy), the models
    ``evolve finalize`` made, beside the best at the right. PNG bytes (matplotlib's Agg, no pyplot)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    times = [r.time for r in rows]
    start = min(times, default=0.0)
    if t0 is not None and t0 <= start:
        start = t0
    span = max(times, default=start) - start
    unit, scale = ("hours", 3600.0) if span >= 7200 else ("minutes", 60.0) if span >= 120 else ("seconds", 1.0)

    def x(row: dict[str, Any]) -> float:
        return (row.time - start) / scale

    rows = [r for r in rows if r.status != "unreadable"]
    ok = [r for r in rows if r.fitness is not None and r.status in (None, "ok")]
    failed = [r for r in rows if not (r.fitness is not None and r.status in (None, "ok"))]
    dead = [r for r in ok if r.step not in live]
    alive = [r for r in ok if r.step in live]
    small = 5 if len(rows) > 2000 else 9 if len(rows) > 500 else 14
    if dead:
        ax.scatter([x(r) for r in dead], [r.fitness for r in dead], s=small, c="#b0b0b0", alpha=0.6,
                   linewidths=0, label=f"dead ({len(dead):,})", zorder=1, rasterized=True)
    if failed:
        ax.scatter([x(r) for r in failed], [r.fitness or 0.0 for r in failed], s=small * 2, c="#d62728",
                   marker="x", linewidths=0.8, alpha=0.7, label=f"failed ({len(failed):,})", zorder=2)
    if alive:
        ax.scatter([x(r) for r in alive], [r.fitness for r in alive], s=small * 3, c="#1f77b4",
                   edgecolors="#0b3d66", linewidths=0.4, label=f"alive ({len(alive):,})", zorder=3)
    line = [r for r in chain if r.fitness is not None]
    if line:
        ax.plot([x(r) for r in line], [r.fitness for r in line], color="#ff7f0e", linewidth=1.6,
                marker="o", markersize=3.5, markeredgecolor="#8a4100",
                label=f"line of descent of the best ({len(chain) - 1} ancestors)", zorder=4)
        best = line[-1]
        ax.scatter([x(best)], [best.fitness], s=220, marker="*", c="#ffd700", edgecolors="black",
                   linewidths=0.8, zorder=5, label=f"best: step {best.step}, {fitness_text(best.fitness)}")
    if marks and ok:
        right = max(x(r) for r in ok)
        step = max(right, 1e-9) * 0.03
        for i, (label, accuracy) in enumerate(marks):
            ax.scatter([right + step * (i + 1)], [accuracy], s=70, marker=MARKERS[i % len(MARKERS)],
                       c=f"C{(i + 2) % 10}", edgecolors="black", linewidths=0.6, zorder=6,
                       label=f"{label}: {100 * accuracy:.2f}% (test)")
    generational = any(r.origin == "generation" for r in rows)
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
    record = read_run_record(store)
    config, _ = load_run(store)
    unreadable: list[tuple[str, str]] = []
    records = read_records(store, store.list_keys("individuals/"), threads, unreadable, typed=True)
    dead = {step_of(k) for k in store.list_keys("deaths/") if k.endswith(".json")}
    rows = [Row.of(records[s]) for s in sorted(records)]
    live = {r.step for r in rows} - dead
    best_s = best_step((r.step, r.fitness) for r in rows)
    best = None if best_s is None else next(r for r in rows if r.step == best_s)
    chain = rows_ancestry({r.step: r for r in rows}, best.step) if best else []
    png = figure_png(rows, live, chain, title=figure_title(config, rows, live, best),
                     t0=num(record.get("created_at")), size=size, dpi=dpi, marks=finalize_marks(store))
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
    return PlotReport(path=path, individuals=len(rows), alive=len(live), best_step=best.step if best else None,
                      width=width, height=height, seconds=time.perf_counter() - started, unreadable=unreadable)
