"""Does the search work? Evolution against random sampling and local search on NAS-Bench-201.

On a tabular benchmark every architecture of the space has been trained once and for all, so a
search costs lookups and can be repeated hundreds of times. This bench runs the real engine
(``open_run`` + ``run_in_process``: the local executor, a fresh store per run, 1 and 4 workers)
with ``genome = "nb201"`` and ``fitness = "table:..."``, R seeds per strategy, and reports for each
budget of evaluations (the initial population included):

* the mean best table value ± 2 standard errors, and the mean regret to the table's optimum;
* the share of runs that found the optimum;
* the paired difference to random sampling at the same budget, seed and worker count (± 2 SE).

Strategies (``--strategies``):

* ``random``: ``selection = "random"``: every child a uniform draw, through the same engine.
* ``tournament``: Real et al. 2017's, population 10.
* ``aging-10-3``: regularized evolution as NAS-Bench-201 ran it (population 10, sample 3).
* ``aging-30-10``: regularized evolution, population 30, sample 10 (the ``nb201-cifar10`` preset),
  chosen on this table among population 20-40 and sample 5-10 (``--strategies aging-P-S``).
* ``local``: local search as White et al. (UAI 2021) describe it, run here over the table (not by
  the engine, serially): the best of 10 random cells, then its 24 one-edge neighbours, moving to the
  best while it improves, restarting from 10 fresh random cells at a local optimum. An architecture
  it has evaluated before costs nothing again (a cache); the engine's strategies pay for every child,
  repeats included.

A run's evaluations are counted in the order they finished (their records' ``created_at``), so the
best after B evaluations is what a run with budget B would have found. Workers look up a child at
once; ``refresh_seconds = 0`` makes each selection see every finished child, as it would when an
evaluation takes far longer than a refresh. ``--simulate`` also runs each engine strategy as a plain
serial loop over the table (no store): a noise-free reference the engine's 1-worker figures must
match within noise; a gap far from it means something in the engine's selection is wrong.

Protocol: the shipped table holds 200-epoch *test* accuracy, the benchmark's noise-free setting;
the published runs search on 12-epoch validation accuracy under a simulated time budget. Compare
strategies with each other here, at equal numbers of evaluations.

    python3 bench/nasbench.py                      # R = 200, budgets 50/100/150/300, 1 and 4 workers
    python3 bench/nasbench.py --table table:s3://bucket/nb201-cifar100.parquet#test_accuracy
    python3 bench/nasbench.py --smoke              # seconds: proves the pipeline, figures meaningless
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header, markdown_table, settings_from  # noqa: E402
from evolve.config import (
    build_config,  # noqa: E402
    parse_table_spec,  # noqa: E402
)
from evolve.runner.launch import open_run, run_in_process  # noqa: E402
from evolve.store.check import check_store  # noqa: E402
from evolve.store.snapshot import Snapshot  # noqa: E402
from evolve.training.tabular import Table, load_table  # noqa: E402
from genomes import SearchSpace  # noqa: E402
from genomes.nb201.genome import EDGES, NB201, OPS  # noqa: E402

ENGINE = {
    "random": {"selection": "random", "population": 10},
    "tournament": {"selection": "tournament", "population": 10},
    "aging-10-3": {"selection": "aging", "population": 10, "sample_size": 3},
    "aging-30-10": {"selection": "aging", "population": 30, "sample_size": 10},
}
LOCAL = "local"


def engine_settings(strategy: str) -> dict[str, Any]:
    """A strategy's run settings: one of ``ENGINE``, or ``tournament-P`` / ``aging-P-S`` for other sizes."""
    if strategy in ENGINE:
        return ENGINE[strategy]
    name, *sizes = strategy.split("-")
    try:
        numbers = [int(s) for s in sizes]
    except ValueError:
        numbers = []
    if name == "tournament" and len(numbers) == 1:
        return {"selection": "tournament", "population": numbers[0]}
    if name == "aging" and len(numbers) == 2:
        return {"selection": "aging", "population": numbers[0], "sample_size": numbers[1]}
    raise SystemExit(f"--strategies: unknown {strategy!r}; known: {[*ENGINE, LOCAL]}, tournament-P, aging-P-S")
LOCAL_START = 10  # random cells a local search starts from (White et al.)


@dataclass
class Settings:
    table: str = "table:nb201-cifar10"
    repeats: int = 200
    first_seed: int = 0
    budgets: str = "50,100,150,300"
    workers: str = "1,4"
    strategies: str = ",".join([*ENGINE, LOCAL])
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    simulate: bool = True
    workdir: str | None = None


SMOKE = {"repeats": 3, "budgets": "24,30", "workers": "1,2", "processes": 1}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------------- one run


def engine_run(strategy: str, workers: int, seed: int, budget: int, table: str, workdir: str) -> dict[str, Any]:
    """One run of the engine; its best-so-far after each evaluation (in the order they finished)."""
    settings = engine_settings(strategy)
    store = tempfile.mkdtemp(prefix=f"{strategy}-{workers}-{seed}-", dir=workdir)
    try:
        config = build_config({"store": store, "genome": "nb201", "fitness": table, "seed": seed,
                               "workers": workers, "steps": budget - settings["population"],
                               "refresh_seconds": 0.0, **settings})
        started = time.perf_counter()
        opened = open_run(config)
        run_in_process(*opened)
        seconds = time.perf_counter() - started
        report = check_store(opened[0], config.population, budget)
        records = list(Snapshot.read(opened[0]).individuals.values())
    finally:
        shutil.rmtree(store, ignore_errors=True)
    records.sort(key=lambda r: (r["created_at"], r["step"]))
    return {"curve": best_so_far([r["fitness"] for r in records]), "seconds": seconds, "ok": report.ok,
            "violations": report.violations[:3]}


def best_so_far(values: Sequence[float]) -> list[float]:
    out, best = [], -math.inf
    for value in values:
        best = max(best, value)
        out.append(best)
    return out


def local_search(seed: int, budget: int, table: Table, space: SearchSpace) -> list[float]:
    """White et al.'s local search over the table; the best-so-far after each (new) evaluation."""
    rng, seen, values = random.Random(seed), set(), []

    def evaluate(genome: NB201) -> float:
        key = genome.to_string()
        if key not in seen:
            seen.add(key)
            values.append(table.values[key])
        return table.values[key]

    while len(values) < budget:
        starts = [NB201.sample(rng, space) for _ in range(LOCAL_START)]
        current = max(starts, key=evaluate)
        while len(values) < budget:
            neighbours = [current.with_edge(e, op) for e in range(len(EDGES)) for op in OPS
                          if op != current.ops[e]]
            rng.shuffle(neighbours)
            scores = []
            for genome in neighbours:
                scores.append((evaluate(genome), genome))
                if len(values) >= budget:
                    break
            best_value, best = max(scores, key=lambda s: s[0])
            if best_value <= table.values[current.to_string()]:
                break
            current = best
    return best_so_far(values[:budget])


def simulated(strategy: str, seed: int, budget: int, table: Table, space: SearchSpace) -> list[float]:
    """The engine's strategy as a plain serial loop: no store, no workers (the noise-free reference)."""
    settings, rng = engine_settings(strategy), random.Random(seed)
    size = settings["population"]
    population = [NB201.sample(rng, space) for _ in range(size)]
    history = list(population)
    value = lambda g: table.values[g.to_string()]  # noqa: E731
    while len(history) < budget:
        if settings["selection"] == "random":
            child, dead = NB201.sample(rng, space), 0
        elif settings["selection"] == "tournament":
            a, b = rng.sample(range(size), 2)
            winner, dead = (a, b) if value(population[a]) >= value(population[b]) else (b, a)
            child = population[winner].mutate(rng, space)[0]
        else:
            sample = rng.sample(range(size), settings["sample_size"])
            parent = max(sample, key=lambda i: (value(population[i]), -i))
            child, dead = population[parent].mutate(rng, space)[0], 0
        del population[dead]
        population.append(child)
        history.append(child)
    return best_so_far([value(g) for g in history])


# ---------------------------------------------------------------------------- statistics


def mean_2se(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (2 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan)


def summarise(curves: dict[tuple[str, str], list[list[float]]], budgets: list[int], optimum: float,
              random_of: Callable[[str], tuple[str, str] | None]) -> list[dict[str, Any]]:
    """One row per (strategy, workers, budget): mean best, regret, share at the optimum, paired gain."""
    rows = []
    for (strategy, workers), runs in curves.items():
        partner = random_of(workers)
        for budget in budgets:
            bests = [c[budget - 1] for c in runs]
            mean, se2 = mean_2se(bests)
            row = {"strategy": strategy, "workers": workers, "budget": budget, "runs": len(bests),
                   "mean": mean, "2se": se2, "regret": optimum - mean,
                   "optimum_share": sum(b >= optimum for b in bests) / len(bests)}
            if partner is not None and partner != (strategy, workers) and partner in curves:
                diffs = [c[budget - 1] - r[budget - 1] for c, r in zip(runs, curves[partner])]
                row["vs_random"], row["vs_random_2se"] = mean_2se(diffs)
            local = curves.get((LOCAL, "serial"))
            if local is not None and strategy != LOCAL:  # independent runs: the SE of a difference of means
                theirs, their_2se = mean_2se([c[budget - 1] for c in local])
                row["vs_local"], row["vs_local_2se"] = mean - theirs, math.hypot(se2, their_2se)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- the picture


def draw(curves: dict[tuple[str, str], list[list[float]]], optimum: float, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({w for _, w in curves if w not in ("serial", "sim")}, key=lambda w: int(w)) or ["serial"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, workers in zip(axes[0], panels):
        for (strategy, w), runs in sorted(curves.items()):
            if w != workers and not (strategy == LOCAL and w == "serial"):
                continue
            n = min(len(c) for c in runs)
            xs = range(1, n + 1)
            means = [statistics.fmean(c[i] for c in runs) for i in range(n)]
            bands = [mean_2se([c[i] for c in runs])[1] for i in range(n)]
            line, = ax.plot(xs, means, label=f"{strategy}" + (" (serial)" if w == "serial" else ""))
            ax.fill_between(xs, [m - b for m, b in zip(means, bands)], [m + b for m, b in zip(means, bands)],
                            color=line.get_color(), alpha=0.2)
        ax.axhline(optimum, color="black", linewidth=0.8, linestyle="--", label=f"optimum {optimum:.2f}")
        low = min(statistics.fmean(c[min(9, len(c) - 1)] for c in runs) for runs in curves.values())
        ax.set_ylim(low - 0.2, optimum + 0.1)
        ax.set_xlabel("evaluations")
        ax.set_title(f"{workers} worker{'s' if workers != '1' else ''}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best so far (mean, band: ±2 SE)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- main


def _engine_task(args: tuple[str, int, int, int, str, str]) -> tuple[str, int, int, dict[str, Any]]:
    logging.disable(logging.WARNING)
    strategy, workers, seed, budget, table, workdir = args
    return strategy, workers, seed, engine_run(strategy, workers, seed, budget, table, workdir)


def run(settings: Settings) -> dict[str, Any]:
    budgets, worker_counts = ints(settings.budgets), ints(settings.workers)
    strategies = [s.strip() for s in settings.strategies.split(",") if s.strip()]
    engine = [s for s in strategies if s != LOCAL and engine_settings(s)]
    budget = max(budgets)
    spec = parse_table_spec(settings.table)
    table = load_table(spec, "nb201")
    optimum = table.best()[1]
    space = SearchSpace(max_params=build_config({"genome": "nb201", "fitness": settings.table}).max_params)
    workdir = settings.workdir or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    workdir = tempfile.mkdtemp(prefix="nasbench-", dir=workdir)
    seeds = range(settings.first_seed, settings.first_seed + settings.repeats)
    tasks = [(s, w, seed, budget, settings.table, workdir) for seed in seeds for w in worker_counts
             for s in engine]
    curves: dict[tuple[str, str], list[list[float]]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    bad: list[str] = []
    started = time.perf_counter()
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    try:
        with ProcessPoolExecutor(max(1, settings.processes)) as pool:
            for i, (s, w, seed, result) in enumerate(pool.map(_engine_task, tasks, chunksize=4), start=1):
                results[(s, w, seed)] = result
                if not result["ok"]:
                    bad.append(f"{s}, {w} workers, seed {seed}: {result['violations']}")
                if i % 50 == 0 or i == len(tasks):
                    print(f"  {i}/{len(tasks)} engine runs, {(time.perf_counter() - started) / 60:.1f} min",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for (s, w, seed) in sorted(results, key=lambda k: k[2]):
        curves.setdefault((s, str(w)), []).append(results[(s, w, seed)]["curve"])
        seconds.setdefault((s, str(w)), []).append(results[(s, w, seed)]["seconds"])
    if LOCAL in strategies:
        curves[(LOCAL, "serial")] = [local_search(seed, budget, table, space) for seed in seeds]
    simulations: dict[tuple[str, str], list[list[float]]] = {}
    if settings.simulate:
        for s in engine:
            simulations[(s, "sim")] = [simulated(s, seed, budget, table, space) for seed in seeds]
    short = [k for k, runs in curves.items() if any(len(c) < budget for c in runs)]
    if short:
        raise SystemExit(f"runs with fewer than {budget} evaluations: {short}")
    partner = lambda w: ("random", "1" if w in ("serial", "sim") else w) if "random" in strategies else None  # noqa: E731
    rows = summarise(curves, budgets, optimum, partner)
    sim_partner = lambda w: ("random", "sim") if "random" in strategies else None  # noqa: E731
    sim_rows = summarise(simulations, budgets, optimum, sim_partner) if simulations else []
    return {"settings": asdict(settings), "optimum": optimum, "optimum_arch": table.best()[0],
            "rows": rows, "simulated": sim_rows, "bad_stores": bad,
            "seconds": {f"{s}/{w}": statistics.fmean(v) for (s, w), v in seconds.items()},
            "wall_minutes": (time.perf_counter() - started) / 60, "curves": curves}


def print_tables(result: dict[str, Any]) -> None:
    columns = ["strategy", "workers", "budget", "mean best ± 2 SE", "regret", "found optimum",
               "vs random (paired) ± 2 SE", "vs local search ± 2 SE"]

    def lines(rows: list[dict[str, Any]]) -> list[list[Any]]:
        return [[r["strategy"], r["workers"], r["budget"], f"{r['mean']:.3f} ± {r['2se']:.3f}",
                 f"{r['regret']:.3f}", f"{100 * r['optimum_share']:.0f}%",
                 f"{r['vs_random']:+.3f} ± {r['vs_random_2se']:.3f}" if "vs_random" in r else "-",
                 f"{r['vs_local']:+.3f} ± {r['vs_local_2se']:.3f}" if "vs_local" in r else "-"]
                for r in sorted(rows, key=lambda r: (r["budget"], r["workers"], r["strategy"]))]

    print(f"\noptimum of the table: {result['optimum']:.4f} ({result['optimum_arch']})\n")
    print(markdown_table(columns, lines(result["rows"])))
    if result["simulated"]:
        print("\nthe same strategies as plain serial loops over the table (no engine, no store):\n")
        print(markdown_table(columns, lines(result["simulated"])))
    print("\nmean seconds per engine run: " + ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items()))
    print(f"wall time: {result['wall_minutes']:.1f} min; every store passed check_store: "
          f"{'yes' if not result['bad_stores'] else 'NO: ' + '; '.join(result['bad_stores'][:3])}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", help="the fitness: table:PATH[#COLUMN] (default: table:nb201-cifar10)")
    p.add_argument("--repeats", type=int, help="R: seeds per strategy and worker count (default 200)")
    p.add_argument("--first-seed", type=int, help="the runs' seeds are first_seed .. first_seed + R - 1 (default 0)")
    p.add_argument("--budgets", help="comma-separated evaluation budgets, the initial population included")
    p.add_argument("--workers", help="comma-separated worker counts (default 1,4)")
    p.add_argument("--strategies", help=f"comma-separated, of {[*ENGINE, LOCAL]}")
    p.add_argument("--processes", type=int, help="runs at once (default: the machine's cores)")
    p.add_argument("--no-simulate", dest="simulate", action="store_false", default=None,
                   help="skip the serial reference loops")
    p.add_argument("--workdir", help="where the runs' stores go (default: /dev/shm)")
    p.add_argument("--png", help="write best-so-far against evaluations here")
    p.add_argument("--json", help="write every figure (and every run's curve) here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery in seconds")
    args = p.parse_args(argv)
    settings = settings_from(argparse.Namespace(**{k: v for k, v in vars(args).items() if v is not None}),
                             Settings, SMOKE)
    print(header("bench/nasbench.py", argv))
    result = run(settings)
    print_tables(result)
    if args.png:
        draw(result["curves"], result["optimum"], args.png,
             f"{settings.table}: best so far, {settings.repeats} runs per line")
        print(f"picture: {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "curves": {f"{s}/{w}": c for (s, w), c in
                                                                    result["curves"].items()}}))
    return 0 if not result["bad_stores"] else 1


if __name__ == "__main__":
    sys.exit(main())
