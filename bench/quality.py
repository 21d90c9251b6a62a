"""Search quality: tournament and aging evolution against random sampling, and the best against LeNet.

Every method gets the same evaluation budget E = population + steps, each evaluation trains a
child for ``--batches`` SGD steps of the engine's Trainer (evolve/train.py) on the embedded
dataset (``mnist-mini``: train 3,600 / val 400 / test 1,000; validation is carved by the seed, the
test split is the same for every seed), and fitness is validation accuracy. Per seed:

* ``tournament`` / ``aging``: the engine itself, ``open_run`` + ``run_in_process`` on a local
  store, ``selection`` set accordingly (aging with ``--sample-size``). Children inherit their
  parent's weights where shapes allow, as in Real et al. 2017.
* ``random``: E independent samples from the same genome space, each trained from scratch with the
  same batches (no inheritance: a random sample has no parent). A sample is the genome kind's
  initial individual followed by a random walk of k mutations, k uniform in 0..K. For ``dna`` the
  initial individual is the paper's trivial net (input -> identity -> output), so the walk is what
  makes the space's larger nets reachable; K defaults to round(steps / population), about the
  lineage depth tournament's best reaches within the budget (aging's reaches about twice that;
  the table reports both, so the match can be checked). For ``gcnn`` the initial individual is
  already a uniform random code.

The best of a method is the individual with the highest validation accuracy among all E evaluated
(ties: the earliest); its test accuracy is reported, never used.

LeNet (Xie & Yuille's MNIST baseline, Caffe's: C5@20-MP2-C5@50-MP2-FC500-ReLU-D0.5-FC10) is
trained by the same Trainer on the same split, with the same SGD settings; its learning rate is
chosen per seed from ``--lenet-lrs`` on validation at budget (a). Budgets:

(a) ``--batches``: what one child gets. This understates LeNet: the evolved best's weights were
    trained along its lineage.
(b) chain x batches, where chain is the evolved best's unbroken inheritance chain (itself plus the
    ancestors it inherited weights through; partial inheritance counted as whole, so an upper
    bound). This matches the training the evolved weights received and is the fair comparison for
    the evolved best *as found*. ``retrained`` trains the evolved best's architecture from scratch
    with the same budget (b): the fair comparison of the two *architectures*.

A budget-(b) run whose loss turns NaN (LeNet has no batch norm; thousands of steps at the rate
chosen over 100 can diverge) is retried at a third of its learning rate, at most twice, for LeNet
and the retrained architecture alike; the table counts retries and runs that still failed.

Neither figure counts the search itself: evolution spent E x batches in total.

    python bench/quality.py                  # full: 5 seeds, ~15 min on 2 idle cores
    python bench/quality.py --smoke          # seconds: proves the pipeline, figures meaningless
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header, settings_from

EVOLUTION = ("tournament", "aging")
LR_RETRIES = 2
METHODS = (*EVOLUTION, "random")


@dataclass(frozen=True)
class Settings:
    genome: str = "dna"
    population: int = 10
    steps: int = 160
    batches: int = 100
    seeds: int = 5
    first_seed: int = 0
    walk: int | None = None
    sample_size: int = 5
    workers: int = 1
    jobs: int = 2
    max_params: int = 1_000_000
    dataset: str = "mnist-mini"
    lenet_lrs: tuple[float, ...] = (0.03, 0.01, 0.003)
    genome_options: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        return self.population + self.steps

    @property
    def walk_limit(self) -> int:
        return self.walk if self.walk is not None else max(1, round(self.steps / self.population))


SMOKE = {"population": 3, "steps": 4, "batches": 3, "seeds": 2, "jobs": 1, "sample_size": 2,
         "lenet_lrs": (0.03,)}


# ----------------------------------------------------------------------------------- one process


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


@functools.lru_cache(maxsize=4)
def _data(dataset: str, seed: int):
    """This seed's split on the CPU, as the engine's TrainingEvaluator loads it."""
    from evolve.data import load_dataset, to_device

    return to_device(load_dataset(dataset, seed=seed), "cpu")


def _space(s: Settings, seed: int):
    from genomes import SearchSpace

    data = _data(s.dataset, seed)
    return SearchSpace(input_shape=tuple(data.input_shape), num_classes=data.num_classes,
                       max_params=s.max_params, options=dict(s.genome_options))


def _train(s: Settings, seed: int, genome: Any, batches: int, train_seed: int):
    """Train ``genome`` from scratch for ``batches`` with the engine's Trainer on this seed's split."""
    import torch

    from evolve.config import TrainConfig
    from evolve.train import Trainer

    trainer = Trainer(_data(s.dataset, seed), TrainConfig(batches=batches, device="cpu"), torch.device("cpu"),
                      s.max_params)
    return trainer.train(genome, None, train_seed)


def evolve_job(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """One engine run with ``selection=method``; the best individual by validation accuracy."""
    from evolve.config import RunConfig, TrainConfig
    from evolve.report import Snapshot
    from evolve.run import open_run, run_in_process

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evolve-quality-") as tmp:
        config = RunConfig(
            store=f"{tmp}/run", genome=s.genome, genome_options=dict(s.genome_options), selection=method,
            sample_size=s.sample_size, population=s.population, steps=s.steps, seed=seed, dataset=s.dataset,
            max_params=s.max_params, train=TrainConfig(batches=s.batches, device="cpu"), workers=s.workers,
        )
        store, config, space = open_run(config)
        run_in_process(store, config, space)
        snap = Snapshot.read(store)
    records = snap.individuals
    best = snap.best()
    ancestry = snap.ancestry(best["step"])
    return {
        "method": method, "seed": seed, "evaluations": len(records),
        "best_val": best["val_accuracy"] or 0.0, "best_test": best["test_accuracy"] or 0.0,
        "best_params": best["metrics"].get("params", 0), "best_genome": best["genome"],
        "best_describe": _describe(best["genome"]), "depth": len(ancestry) - 1,
        "chain": inheritance_chain(ancestry), "failed": sum(r["status"] != "ok" for r in records.values()),
        "compute_s": sum(_compute(r["metrics"]) for r in records.values()),
        "wall_s": time.perf_counter() - start,
    }


def inheritance_chain(ancestry: list[dict[str, Any]]) -> int:
    """Trainings whose weights reached the last individual: itself, then back while it inherited."""
    chain = 1
    for record in reversed(ancestry[1:]):
        if not record.get("metrics", {}).get("inherited", 0.0):
            break
        chain += 1
    return chain


def random_genome(kind: str, rng: random.Random, space: Any, walk_limit: int) -> tuple[Any, int]:
    """The kind's initial individual after k uniform-random mutations, k uniform in 0..walk_limit; and k."""
    from genomes import genome_class

    genome = genome_class(kind).initial(rng, space)
    walk = rng.randint(0, walk_limit)
    for _ in range(walk):
        genome, _ = genome.mutate(rng, space)
    return genome, walk


def random_job(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """E random samples, each trained from scratch with the same batches."""
    from evolve.seeding import derive_seed, rng_for

    start = time.perf_counter()
    space = _space(s, seed)
    best: tuple[float, int, Any, Any] | None = None
    failed, compute = 0, 0.0
    for i in range(s.evaluations):
        genome, walk = random_genome(s.genome, rng_for(seed, "random-sample", i), space, s.walk_limit)
        outcome = _train(s, seed, genome, s.batches, derive_seed(seed, "random-train", i))
        failed += outcome.status != "ok"
        compute += outcome.train_seconds + outcome.eval_seconds
        if best is None or outcome.fitness > best[0]:
            best = (outcome.fitness, walk, genome, outcome)
    assert best is not None
    _, walk, genome, outcome = best
    return {
        "method": method, "seed": seed, "evaluations": s.evaluations,
        "best_val": outcome.val_accuracy or 0.0, "best_test": outcome.test_accuracy or 0.0,
        "best_params": outcome.params, "best_genome": genome.to_json(), "best_describe": genome.describe(),
        "depth": walk, "chain": 1, "failed": failed, "compute_s": compute,
        "wall_s": time.perf_counter() - start,
    }


def _compute(metrics: dict[str, Any]) -> float:
    return float(metrics.get("train_seconds", 0.0)) + float(metrics.get("eval_seconds", 0.0))


def _describe(genome_json: dict[str, Any]) -> str:
    from genomes import genome_from_json

    return genome_from_json(genome_json).describe()


class LeNet:
    """Caffe's LeNet as Xie & Yuille give it, C5@20-MP2S2-C5@50-MP2S2-FC500-D0.5-FC10, with ReLU after FC500.

    Only what the engine's Trainer asks of a genome: a module, its size and a learning rate.
    """

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int):
        from torch import nn

        c, h, w = input_shape
        return nn.Sequential(
            nn.Conv2d(c, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(50 * _lenet_side(h) * _lenet_side(w), 500), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(500, num_classes),
        )

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        return sum(p.numel() for p in self.to_module(input_shape, num_classes).parameters())

    def learning_rate(self) -> float:
        return self.lr


def _lenet_side(n: int) -> int:
    """A side after two valid 5x5 convolutions, each followed by 2x2 max pooling."""
    return ((n - 4) // 2 - 4) // 2


def lenet_job(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """LeNet at budget (a), its learning rate chosen on validation from ``s.lenet_lrs``."""
    from evolve.seeding import derive_seed

    start = time.perf_counter()
    trials = [(lr, _train(s, seed, LeNet(lr), s.batches, derive_seed(seed, "lenet"))) for lr in s.lenet_lrs]
    lr, outcome = max(trials, key=lambda t: t[1].fitness)
    return {"method": method, "seed": seed, "lr": lr, "batches": s.batches,
            "val": outcome.val_accuracy or 0.0,
            "test": outcome.test_accuracy or 0.0, "wall_s": time.perf_counter() - start,
            "tried": {str(k): o.fitness for k, o in trials}}


class WithLearningRate:
    """A model (genome or LeNet) trained at another learning rate: how a diverged long run is retried."""

    def __init__(self, model: Any, lr: float) -> None:
        self.model, self.lr = model, lr

    def to_module(self, input_shape: tuple[int, int, int], num_classes: int):
        return self.model.to_module(input_shape, num_classes)

    def param_count(self, input_shape: tuple[int, int, int], num_classes: int) -> int:
        return self.model.param_count(input_shape, num_classes)

    def learning_rate(self) -> float:
        return self.lr


def long_job(s: Settings, kind: str, seed: int, batches: int, lr: float | None = None,
             genome_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """Budget (b): LeNet at ``lr`` or the evolved architecture (at its own rate) retrained from scratch.

    A run whose loss turns NaN is retried at a third of its learning rate, at most ``LR_RETRIES``
    times, for both alike; ``retries`` records how often.
    """
    from evolve.config import TrainConfig
    from evolve.seeding import derive_seed
    from genomes import genome_from_json

    start = time.perf_counter()
    model = LeNet(lr or 0.0) if genome_json is None else genome_from_json(genome_json)
    rate = model.learning_rate() or TrainConfig().learning_rate
    for retries in range(LR_RETRIES + 1):
        retuned = WithLearningRate(model, rate / 3**retries)
        outcome = _train(s, seed, retuned, batches, derive_seed(seed, kind))
        if outcome.reason != "nan loss":
            break
    return {"kind": kind, "seed": seed, "batches": batches, "val": outcome.val_accuracy or 0.0,
            "test": outcome.test_accuracy or 0.0, "status": outcome.status, "lr": rate / 3**retries,
            "retries": retries, "wall_s": time.perf_counter() - start}


def run_job(job: tuple[Callable[..., dict[str, Any]], tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    _single_thread()
    fn, args, kwargs = job
    return fn(*args, **kwargs)


# ----------------------------------------------------------------------------------- orchestration


def run_all(s: Settings, executor: Any) -> dict[str, Any]:
    """Every job of the benchmark; a search's long runs start once it and its seed's LeNet (a) are done."""
    seeds = range(s.first_seed, s.first_seed + s.seeds)
    jobs = [(lenet_job, (s, "lenet", seed), {}) for seed in seeds]
    jobs += [(evolve_job, (s, m, seed), {}) for seed in seeds for m in EVOLUTION]
    jobs += [(random_job, (s, "random", seed), {}) for seed in seeds]
    pending = {executor.submit(run_job, job) for job in jobs}
    searches: list[dict[str, Any]] = []
    lenets: dict[int, dict[str, Any]] = {}
    longs: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            r = future.result()
            if "kind" in r:
                longs.append(r)
            elif r["method"] == "lenet":
                lenets[r["seed"]] = r
            else:
                searches.append(r)
                waiting += [r] if r["method"] in EVOLUTION else []
        for r in [w for w in waiting if w["seed"] in lenets]:
            waiting.remove(r)
            pending |= {executor.submit(run_job, job) for job in long_jobs(s, r, lenets[r["seed"]]["lr"])}
    return {"searches": searches, "lenet": list(lenets.values()), "long": longs}


def long_jobs(s: Settings, search: dict[str, Any], lenet_lr: float) -> list[tuple[Any, ...]]:
    """Budget (b) for one evolved best: LeNet, and the best's architecture retrained from scratch."""
    batches, seed, method = search["chain"] * s.batches, search["seed"], search["method"]
    return [(long_job, (s, f"lenet-b/{method}", seed, batches), {"lr": lenet_lr}),
            (long_job, (s, f"retrained/{method}", seed, batches), {"genome_json": search["best_genome"]})]


class InProcess:
    """The executor interface, running each job at once in this process (``--jobs 1``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - surfaced by future.result()
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


def make_executor(jobs: int) -> Any:
    """``jobs`` processes (forked from a server with torch imported; one torch thread each), or this one."""
    if jobs <= 1:
        _single_thread()
        return InProcess()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "evolve.run", "evolve.train", "genomes"])
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)


# ----------------------------------------------------------------------------------- report


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}–{max(values):.3f})"


def mean(values: list[float | int | None], digits: int = 1) -> str:
    vals = [v for v in values if v is not None]
    return f"{statistics.mean(vals):.{digits}f}" if vals else "-"


def report(s: Settings, results: dict[str, Any], head: str, seconds: float) -> str:
    searches = results["searches"]
    by = {m: sorted((r for r in searches if r["method"] == m), key=lambda r: r["seed"]) for m in METHODS}
    lines = [
        head,
        f"wall: {seconds:.0f} s in {s.jobs} process(es), one torch thread each",
        (f"budget per method and seed: {s.evaluations} evaluations "
         f"(population {s.population} + {s.steps} steps), "
        f"{s.batches} batches of 50 each; genome {s.genome}; dataset {s.dataset}; seeds "
        f"{s.first_seed}..{s.first_seed + s.seeds - 1}; random walk k in 0..{s.walk_limit}"),
        "",
        ("| method | best val acc | its test acc | mutations from initial | inherit chain | params | "
         "failed | train+eval s | wall s |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        rows = by[m]
        lines.append(
            f"| {m} | {spread([r['best_val'] for r in rows])} | {spread([r['best_test'] for r in rows])} | "
            f"{mean([r['depth'] for r in rows])} | {mean([r['chain'] for r in rows])} | "
            f"{mean([r['best_params'] for r in rows], 0)} | {mean([r['failed'] for r in rows])} | "
            f"{mean([r['compute_s'] for r in rows])} | {mean([r['wall_s'] for r in rows])} |"
        )
    lines += ["", ("mean ± sample std (min–max) over seeds; test accuracy of the individual with the best "
              "validation accuracy."), ""]
    lines += _lenet_table(s, results, by)
    lines += ["", *verdicts(results, by)]
    return "\n".join(lines)


def _lenet_table(s: Settings, results: dict[str, Any], by: dict[str, list[dict[str, Any]]]) -> list[str]:
    lenet = sorted(results["lenet"], key=lambda r: r["seed"])
    longs = results["long"]
    lrs = ", ".join(f"{r['lr']:g}" for r in lenet)
    lines = [
        "| model | training batches (mean) | val acc | test acc | lr retries / failed |",
        "|---|---|---|---|---|",
        (f"| LeNet (a): per-child budget, lr per seed {lrs} | {s.batches} | "
         f"{spread([r['val'] for r in lenet])} | {spread([r['test'] for r in lenet])} | - |"),
    ]
    for m in EVOLUTION:
        for kind, label in ((f"lenet-b/{m}", f"LeNet (b): {m} best's lineage budget"),
                            (f"retrained/{m}", f"{m} best, retrained from scratch, same budget")):
            rows = [r for r in longs if r["kind"] == kind]
            lines.append(f"| {label} | {mean([r['batches'] for r in rows], 0)} | "
                         f"{spread([r['val'] for r in rows])} | {spread([r['test'] for r in rows])} | "
                         f"{sum(r['retries'] for r in rows)} / {sum(r['status'] != 'ok' for r in rows)} |")
        rows = by[m]
        lines.append(f"| {m} best as found (inherited weights) | {s.batches} x chain | "
                     f"{spread([r['best_val'] for r in rows])} | "
                     f"{spread([r['best_test'] for r in rows])} | - |")
    lines += ["", (f"lr retries: long runs whose loss turned NaN, retried at a third of the learning rate "
                   f"(at most {LR_RETRIES} times); failed: still NaN, scored 0.")]
    return lines


def verdicts(results: dict[str, Any], by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Plain sentences: does evolution beat random sampling and LeNet, paired by seed, on test accuracy."""
    lenet = {r["seed"]: r["test"] for r in results["lenet"]}
    longs = {(r["kind"], r["seed"]): r["test"] for r in results["long"]}
    rand = {r["seed"]: r["best_test"] for r in by["random"]}
    out = []
    for m in EVOLUTION:
        mine = {r["seed"]: r["best_test"] for r in by[m]}
        out.append(_paired(f"{m} vs random (test acc of best)", mine, rand))
        out.append(_paired(f"{m} best as found vs LeNet (b)", mine,
                           {s: longs[(f"lenet-b/{m}", s)] for s in mine if (f"lenet-b/{m}", s) in longs}))
        out.append(_paired(f"{m} best retrained vs LeNet (b)",
                           {s: longs[(f"retrained/{m}", s)] for s in mine if (f"retrained/{m}", s) in longs},
                           {s: longs[(f"lenet-b/{m}", s)] for s in mine if (f"lenet-b/{m}", s) in longs}))
        out.append(_paired(f"{m} best as found vs LeNet (a)", mine, lenet))
    return out


def _paired(label: str, a: dict[int, float], b: dict[int, float]) -> str:
    """A wins only if the mean paired difference minus two standard errors is above zero."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return f"- {label}: no paired seeds"
    diffs = [a[s] - b[s] for s in seeds]
    wins, m = sum(d > 0 for d in diffs), statistics.mean(diffs)
    half = 2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    if m - half > 0:
        verdict = "wins"
    elif m + half < 0:
        verdict = "does NOT win (worse)"
    else:
        verdict = f"does NOT {'clearly ' if m > 0 else ''}win (the interval includes 0)"
    return (f"- {label}: {verdict}; mean difference {m:+.3f} ± {half:.3f} (2 standard errors), "
            f"better on {wins}/{len(seeds)} seeds")


# ----------------------------------------------------------------------------------- entry point


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", default=False,
                   help="tiny sizes: seconds; proves the pipeline only")
    p.add_argument("--genome", choices=("dna", "gcnn"))
    p.add_argument("--genome-options", type=json.loads, help='JSON, e.g. \'{"nodes": [3, 5]}\'')
    p.add_argument("--population", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--batches", type=int, help="SGD steps (batch 50) per evaluation")
    p.add_argument("--seeds", type=int)
    p.add_argument("--first-seed", type=int)
    p.add_argument("--walk", type=int, help="random sampling: most mutations (default steps/pop)")
    p.add_argument("--sample-size", type=int, help="aging evolution's S")
    p.add_argument("--workers", type=int, help="engine workers (threads) per run")
    p.add_argument("--jobs", type=int, help="runs in parallel (processes, one thread each)")
    p.add_argument("--max-params", type=int)
    p.add_argument("--lenet-lrs", type=lambda t: tuple(float(x) for x in t.split(",")))
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--from-json", type=Path, default=None, help="print the tables of a run saved with --json")
    args = p.parse_args(argv)
    return settings_from(args, Settings, SMOKE), args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    s, args = parse(argv)
    if args.from_json:
        return rerender(args.from_json)
    head = header("bench/quality.py", argv)
    start = time.perf_counter()
    executor = make_executor(s.jobs)
    try:
        results = run_all(s, executor)
    finally:
        executor.shutdown()
    seconds = time.perf_counter() - start
    print(report(s, results, head, seconds), flush=True)
    if args.json:
        saved = {"header": head, "settings": asdict(s), "seconds": seconds, **results}
        args.json.write_text(json.dumps(saved, indent=1))
    return 0


def rerender(path: Path) -> int:
    """Print the tables of a run saved with ``--json`` (its own command, machine and date)."""
    data = json.loads(path.read_text())
    settings = {**data["settings"], "lenet_lrs": tuple(data["settings"]["lenet_lrs"])}
    results = {k: data[k] for k in ("searches", "lenet", "long")}
    print(report(Settings(**settings), results, data["header"], data["seconds"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
