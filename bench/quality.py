"""Search quality: tournament and aging evolution against random sampling and a well-trained LeNet-5.

Each method gets the same training compute per seed, counted in SGD batches of 50:
E x ``--batches`` where E = population + steps evaluations of the engine. Per seed:

* ``tournament`` / ``aging``: the engine itself (``open_run`` + ``run_in_process``, one worker,
  a local store) with the default search (DNA grown from a small conv stem by function-preserving
  mutations, each child trained ``--batches`` with a cosine schedule from its parent's weights),
  ``selection`` set accordingly.
* ``random``: random sampling from the same space at the same compute. A sample is the default
  initial individual followed by a random walk of k of the same mutations, k uniform in 0..K
  (K = ``--walk``, default 2 x steps / population, about the lineage depth evolution's best
  reaches); it has no parent, so each sample is trained from scratch, and at the LeNet-5 recipe's
  budget (``--random-batches``, 1,500) rather than a child's: E x batches / 1,500 samples. A user
  doing random search would train each candidate properly; training each for a child's 150
  batches would only flatter evolution.

The best of a method is the individual (or sample) with the highest validation accuracy; its test
accuracy is reported, never used. The measures, reported separately:

(a) **as found**: the best model the compute bought (a child's inherited, lineage-trained weights;
    a random sample as trained).
(a+) **as a run hands it over**: the run's final training (``evolve.final.final_model.train_final``) given
    to that best, ``--final-batches`` (4,000) of it: by default its architecture from scratch with
    LeNet-5's recipe on the training and validation splits; every method's best gets the same, so
    the compute stays equal.
(b) **retrained**: the best architecture trained from scratch with the LeNet-5 recipe and budget
    (``evolve.training.lenet``: one-cycle SGD peaking at 0.1, Nesterov, weight decay 5e-4, shifts,
    1,500 batches): the architecture alone, without the training a lineage inherits. The mean of
    ``--retrains`` (3) initialisations, and LeNet-5's likewise, so that one lucky start decides less.

LeNet-5 (batch norm, the same recipe) on the same split is the reference line for both, and the
best *initial* individual trained from its own start for as many batches as the best's lineage
received (cosine) shows what evolution added over its starting point.

    python bench/quality.py                  # full: 5 seeds
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header, settings_from

EVOLUTION = ("tournament", "aging")
METHODS = (*EVOLUTION, "random")


@dataclass(frozen=True)
class Settings:
    genome: str = "dna"
    population: int = 12
    steps: int = 188
    batches: int = 150
    random_batches: int = 1500
    retrain_batches: int = 1500
    retrains: int = 3
    final_batches: int = 4000
    seeds: int = 5
    first_seed: int = 0
    walk: int | None = None
    sample_size: int = 4
    jobs: int = 2
    max_params: int = 200_000
    dataset: str = "mnist-mini"
    genome_options: dict[str, Any] | None = None
    inherit: bool = True  # evolution's children start from their parent's weights (the default search)

    @property
    def evaluations(self) -> int:
        return self.population + self.steps

    @property
    def walk_limit(self) -> int:
        return self.walk if self.walk is not None else max(1, round(2 * self.steps / self.population))

    @property
    def samples(self) -> int:
        """Random samples bought by the evolution runs' compute."""
        return max(1, round(self.evaluations * self.batches / self.random_batches))


SMOKE = {"population": 3, "steps": 4, "batches": 3, "random_batches": 7, "retrain_batches": 5, "retrains": 2,
         "final_batches": 4,
         "seeds": 2,
         "jobs": 1, "sample_size": 2}


# ----------------------------------------------------------------------------------- one process


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _config(s: Settings, seed: int, selection: str = "tournament", store: str = "unused"):
    from evolve.config import RunConfig

    extra = {} if s.genome_options is None else {"genome_options": dict(s.genome_options)}
    return RunConfig(store=store, genome=s.genome, selection=selection, sample_size=s.sample_size,
                     population=s.population, steps=s.steps, seed=seed, dataset=s.dataset, max_params=s.max_params,
                     workers=1, train={"batches": s.batches, "device": "cpu", "inherit_weights": s.inherit},
                     final_batches=s.final_batches,
                     **extra)


@functools.lru_cache(maxsize=4)
def _data(dataset: str, seed: int, val_fraction: float):
    """This seed's split on the CPU, as the engine's TrainingEvaluator loads it."""
    from evolve.training.datasets import load_dataset
    from evolve.training.train import to_device

    return to_device(load_dataset(dataset, seed=seed, val_fraction=val_fraction), "cpu")


def _trainer(s: Settings, seed: int, train):
    import torch

    from evolve.training.train import Trainer

    config = _config(s, seed)
    return Trainer(_data(s.dataset, seed, config.val_fraction), train, torch.device("cpu"), s.max_params)


def _recipe(s: Settings, seed: int, batches: int):
    from evolve.training.lenet import recipe_for

    config = _config(s, seed)
    channels = _data(s.dataset, seed, config.val_fraction).input_shape[0]
    return recipe_for(config.train, channels, batches=batches).model_copy(update={"evaluate_test": True})


def _space(s: Settings, seed: int):
    from evolve.runner.launch import space_for

    return space_for(_config(s, seed))


def evolve_job(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """One engine run with ``selection=method``: the best individual as found, and its lineage."""
    from evolve.final.final_model import final_model, lineage_batches, measured_test_accuracy
    from evolve.runner.launch import open_run, run_in_process
    from evolve.store.snapshot import Snapshot

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evolve-quality-") as tmp:
        store, config, space = open_run(_config(s, seed, method, f"{tmp}/run"), check_health=False)
        run_in_process(store, config, space)
        snap = Snapshot.read(store)
        best = snap.best()
        data = _data(s.dataset, seed, config.val_fraction)
        test = measured_test_accuracy(store, config, best, data)
        final = final_model(store, config, best, data) or {}
    records = snap.individuals
    initial = max((records[i] for i in range(s.population)), key=lambda r: (r["fitness"], -r["step"]))
    return {
        "method": method, "seed": seed, "evaluations": len(records),
        "best_val": best["val_accuracy"] or 0.0, "best_test": test or 0.0,
        "final_val": final.get("val_accuracy") or 0.0, "final_test": final.get("test_accuracy") or 0.0,
        "best_params": best["metrics"].get("params", 0), "best_genome": best["genome"],
        "best_describe": _describe(best["genome"]), "depth": len(snap.ancestry(best["step"])) - 1,
        "lineage_batches": lineage_batches(snap, best["step"]), "initial_genome": initial["genome"],
        "initial_seed": initial["seed"], "failed": sum(r["status"] != "ok" for r in records.values()),
        "batches": sum(int(r["metrics"].get("batches", 0)) for r in records.values()),
        "compute_s": sum(_compute(r["metrics"]) for r in records.values()),
        "wall_s": time.perf_counter() - start,
    }


def random_genome(kind: str, rng: random.Random, space: Any, walk_limit: int) -> tuple[Any, int]:
    """The kind's initial individual after k random mutations of the space, k uniform in 0..walk_limit; and k."""
    from genomes import genome_class

    genome = genome_class(kind).initial(rng, space)
    walk = rng.randint(0, walk_limit)
    for _ in range(walk):
        genome, _ = genome.mutate(rng, space)
    return genome, walk


def random_job(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """``s.samples`` random architectures, each trained from scratch with the LeNet-5 recipe (its rate too)."""
    from evolve.seeding import derive_seed, rng_for

    start = time.perf_counter()
    space = _space(s, seed)
    recipe = _recipe(s, seed, s.random_batches)
    trainer = _trainer(s, seed, recipe)
    best: tuple[float, int, Any, Any] | None = None
    failed, compute = 0, 0.0
    for i in range(s.samples):
        genome, walk = random_genome(s.genome, rng_for(seed, "random-sample", i), space, s.walk_limit)
        outcome = trainer.train(_AtRate(genome, recipe.learning_rate), None, derive_seed(seed, "random-train", i))
        failed += outcome.status != "ok"
        compute += outcome.train_seconds + outcome.eval_seconds
        if best is None or outcome.fitness > best[0]:
            best = (outcome.fitness, walk, genome, outcome)
    assert best is not None
    _, walk, genome, outcome = best
    final = _final(s, seed, genome, outcome.weights)
    return {
        "method": method, "seed": seed, "evaluations": s.samples,
        "best_val": outcome.val_accuracy or 0.0, "best_test": outcome.test_accuracy or 0.0,
        "final_val": final.get("val_accuracy") or 0.0, "final_test": final.get("test_accuracy") or 0.0,
        "best_params": outcome.params, "best_genome": genome.to_json(), "best_describe": genome.describe(),
        "depth": walk, "lineage_batches": s.random_batches, "failed": failed,
        "batches": s.samples * s.random_batches, "compute_s": compute, "wall_s": time.perf_counter() - start,
    }


def _final(s: Settings, seed: int, genome: Any, weights: bytes | None) -> dict[str, Any]:
    """The random search's best trained as the engine trains its best at the end (``evolve.final.final_model.train_final``)."""
    from evolve.final.final_model import final_start, train_final
    from evolve.seeding import derive_seed

    if weights is None:
        return {}
    config = _config(s, seed)
    data = _data(s.dataset, seed, config.val_fraction)
    final_seed = derive_seed(seed, "final", "random")
    return train_final(final_start(genome, config, data, final_seed, weights), config, data, final_seed)


def _compute(metrics: dict[str, Any]) -> float:
    return float(metrics.get("train_seconds", 0.0)) + float(metrics.get("eval_seconds", 0.0))


def _describe(genome_json: dict[str, Any]) -> str:
    from genomes import genome_from_json

    return genome_from_json(genome_json).describe()


def lenet_job(s: Settings, method: str, seed: int) -> dict[str, Any]:
    """LeNet-5 with batch norm, trained with the recipe a user would use, on this seed's split."""
    from evolve.seeding import derive_seed
    from evolve.training.lenet import train_lenet

    data = _data(s.dataset, seed, _config(s, seed).val_fraction)
    runs = [train_lenet(data, seed if i == 0 else derive_seed(seed, "lenet", i), _recipe(s, seed, s.retrain_batches))
            for i in range(s.retrains)]
    return {"method": method, "seed": seed, "batches": s.retrain_batches,
            "val": statistics.mean(r["val_accuracy"] for r in runs), "test": statistics.mean(r["test_accuracy"] for r in runs),
            "tests": [r["test_accuracy"] for r in runs], "params": runs[0]["params"],
            "wall_s": statistics.mean(r["train_seconds"] for r in runs)}


def retrain_job(s: Settings, kind: str, seed: int, genome_json: dict[str, Any]) -> dict[str, Any]:
    """Measure (b): an architecture trained from scratch with the LeNet-5 recipe and budget, the mean of
    ``s.retrains`` initialisations (the first as before ``retrains`` existed)."""
    from evolve.seeding import derive_seed
    from genomes import genome_from_json

    genome = _AtRate(genome_from_json(genome_json), _recipe(s, seed, s.retrain_batches).learning_rate)
    trainer = _trainer(s, seed, _recipe(s, seed, s.retrain_batches))
    runs = [trainer.train(genome, None, derive_seed(seed, "retrain") if i == 0 else derive_seed(seed, "retrain", i))
            for i in range(s.retrains)]
    return {"kind": kind, "seed": seed, "batches": s.retrain_batches,
            "val": statistics.mean(o.val_accuracy or 0.0 for o in runs),
            "test": statistics.mean(o.test_accuracy or 0.0 for o in runs),
            "tests": [o.test_accuracy or 0.0 for o in runs], "status": runs[0].status, "params": runs[0].params,
            "wall_s": statistics.mean(o.train_seconds for o in runs)}


def initial_long_job(s: Settings, kind: str, seed: int, genome_json: dict[str, Any], init_seed: int,
                     batches: int) -> dict[str, Any]:
    """The best initial individual, from its own start (same initialisation), trained as long as the best's lineage."""
    from genomes import genome_from_json

    train = _config(s, seed).train.model_copy(update={"batches": batches, "evaluate_test": True})
    outcome = _trainer(s, seed, train).train(genome_from_json(genome_json), None, init_seed)
    return {"kind": kind, "seed": seed, "batches": batches, "val": outcome.val_accuracy or 0.0,
            "test": outcome.test_accuracy or 0.0, "status": outcome.status, "wall_s": outcome.train_seconds}


class _AtRate:
    """A genome trained at the recipe's peak rate instead of the one it carries (the recipe is the same for all)."""

    def __init__(self, genome: Any, lr: float) -> None:
        self.genome, self.lr = genome, lr

    def __getattr__(self, name: str) -> Any:
        return getattr(self.genome, name)

    def learning_rate(self) -> float:
        return self.lr


def run_job(job: tuple[Callable[..., dict[str, Any]], tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    _single_thread()
    fn, args, kwargs = job
    return fn(*args, **kwargs)


# ----------------------------------------------------------------------------------- orchestration


BASELINE_FIELDS = ("dataset", "genome", "genome_options", "population", "steps", "batches", "random_batches",
                   "retrain_batches", "retrains", "final_batches", "seeds", "first_seed", "walk", "max_params")
"""The settings random sampling and LeNet-5 depend on: a saved run's baselines are reused only if they match."""


def cached_baselines(s: Settings, path: Path) -> dict[str, list[dict[str, Any]]]:
    """Random sampling's and LeNet-5's results (with their follow-ups) from a run saved with ``--json``."""
    data = json.loads(path.read_text())
    saved = {**asdict(Settings()), **data["settings"]}
    differ = [f for f in BASELINE_FIELDS if saved.get(f) != getattr(s, f)]
    if differ:
        raise SystemExit(f"--reuse-baselines {path}: saved with other {', '.join(differ)} "
                         f"({', '.join(f'{f}={saved.get(f)!r}' for f in differ)})")
    return {"searches": [r for r in data["searches"] if r["method"] == "random"], "lenet": data["lenet"],
            "long": [r for r in data["long"] if r["kind"] == "retrained/random"]}


def run_all(s: Settings, executor: Any, baselines: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Every job; a search's follow-ups (its best retrained, its initial trained as long) start when it ends.
    With ``baselines`` (``cached_baselines``) random sampling and LeNet-5 are not run again."""
    seeds = range(s.first_seed, s.first_seed + s.seeds)
    jobs = [(evolve_job, (s, m, seed), {}) for seed in seeds for m in EVOLUTION]
    if baselines is None:
        jobs += [(random_job, (s, "random", seed), {}) for seed in seeds]
        jobs += [(lenet_job, (s, "lenet", seed), {}) for seed in seeds]
    pending = {executor.submit(run_job, job) for job in jobs}
    results: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in (baselines or {}).items()} or {
        "searches": [], "lenet": [], "long": []}
    finished, start = 0, time.perf_counter()
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            r = future.result()
            finished += 1
            print(f"[{time.perf_counter() - start:5.0f} s] {r.get('kind') or r['method']} seed {r['seed']} done "
                  f"({finished} jobs finished, {len(pending)} running or queued)", file=sys.stderr, flush=True)
            if "kind" in r:
                results["long"].append(r)
            elif r["method"] == "lenet":
                results["lenet"].append(r)
            else:
                results["searches"].append(r)
                pending |= {executor.submit(run_job, job) for job in follow_ups(s, r)}
    return results


def follow_ups(s: Settings, search: dict[str, Any]) -> list[tuple[Any, ...]]:
    seed, method = search["seed"], search["method"]
    jobs = [(retrain_job, (s, f"retrained/{method}", seed, search["best_genome"]), {})]
    if method in EVOLUTION:
        jobs.append((initial_long_job, (s, f"initial-long/{method}", seed, search["initial_genome"],
                                        search["initial_seed"], search["lineage_batches"]), {}))
    return jobs


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
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "evolve.runner.launch", "evolve.training.train", "genomes"])
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)


# ----------------------------------------------------------------------------------- report


def spread(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]  # runs saved before a measure existed lack it
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
    longs = {(r["kind"], r["seed"]): r for r in results["long"]}
    lines = [
        head,
        f"wall: {seconds:.0f} s in {s.jobs} process(es), one torch thread each",
        (f"compute per method and seed: {s.evaluations * s.batches:,} batches of 50 — evolution: {s.evaluations} "
         f"evaluations (population {s.population} + {s.steps} steps) x {s.batches}, children "
         f"{'from their parent' + chr(39) + 's weights' if s.inherit else 'from scratch'}; random: {s.samples} samples x "
         f"{s.random_batches}, walks of k in 0..{s.walk_limit}; genome {s.genome}; dataset {s.dataset}; seeds "
         f"{s.first_seed}..{s.first_seed + s.seeds - 1}"),
        "",
        ("| method | (a) best as found: val | (a) test | (a+) then trained as a run's final model: test | "
         "(b) retrained, recipe: test | mutations from initial | lineage batches | params | failed | batches | "
         "train+eval s | wall s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        rows = by[m]
        retrained = [longs[(f"retrained/{m}", r["seed"])]["test"] for r in rows if (f"retrained/{m}", r["seed"]) in longs]
        lines.append(
            f"| {m} | {spread([r['best_val'] for r in rows])} | {spread([r['best_test'] for r in rows])} | "
            f"{spread([r.get('final_test') for r in rows])} | {spread(retrained)} | {mean([r['depth'] for r in rows])} | {mean([r['lineage_batches'] for r in rows], 0)} | "
            f"{mean([r['best_params'] for r in rows], 0)} | {mean([r['failed'] for r in rows])} | "
            f"{mean([r['batches'] for r in rows], 0)} | {mean([r['compute_s'] for r in rows])} | "
            f"{mean([r['wall_s'] for r in rows])} |"
        )
    lenet = sorted(results["lenet"], key=lambda r: r["seed"])
    lines.append(f"| LeNet-5 (recipe, {s.retrain_batches} batches) | {spread([r['val'] for r in lenet])} | "
                 f"{spread([r['test'] for r in lenet])} | - | (same) | - | {s.retrain_batches} | "
                 f"{mean([r['params'] for r in lenet], 0)} | - | {s.retrain_batches} | "
                 f"{mean([r['wall_s'] for r in lenet])} | - |")
    for m in EVOLUTION:
        rows = [longs[k] for k in sorted(longs) if k[0] == f"initial-long/{m}"]
        lines.append(f"| {m}'s best initial, trained as long as its best's lineage | "
                     f"{spread([r['val'] for r in rows])} | {spread([r['test'] for r in rows])} | - | - | 0 | "
                     f"{mean([r['batches'] for r in rows], 0)} | - | - | - | {mean([r['wall_s'] for r in rows])} | - |")
    lines += ["", ("mean ± sample std (min–max) over seeds; test accuracy of the model with the best validation "
                   f"accuracy. (a+) gives that best the run's final training ({s.final_batches:,} batches; by default "
                   "its architecture from scratch with LeNet-5's recipe on train+val), the same for every "
                   "method, so the compute stays equal. (b) "
                   f"trains the best architecture from scratch with LeNet-5's recipe and budget, the mean of {s.retrains} "
                   "initialisations (LeNet-5's row too)."), ""]
    lines += verdicts(results, by)
    return "\n".join(lines)


def verdicts(results: dict[str, Any], by: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Plain sentences, paired by seed on test accuracy: evolution against random, LeNet-5 and its own start."""
    lenet = {r["seed"]: r["test"] for r in results["lenet"]}
    longs: dict[str, dict[int, float]] = {}
    for r in results["long"]:
        longs.setdefault(r["kind"], {})[r["seed"]] = r["test"]
    found = {m: {r["seed"]: r["best_test"] for r in by[m]} for m in METHODS}
    final = {m: {r["seed"]: r["final_test"] for r in by[m] if r.get("final_test")} for m in METHODS}
    out = []
    for m in EVOLUTION:
        out.append(_paired(f"(a) {m} vs random, best as found", found[m], found["random"]))
        out.append(_paired(f"(a+) {m} vs random, each best then trained as a run's final model", final[m],
                           final["random"]))
        out.append(_paired(f"(a+) {m} final model vs LeNet-5", final[m], lenet))
        out.append(_paired(f"(b) {m} vs random, best architecture retrained", longs.get(f"retrained/{m}", {}),
                           longs.get("retrained/random", {})))
        out.append(_paired(f"(b) {m} retrained vs LeNet-5", longs.get(f"retrained/{m}", {}), lenet))
        out.append(_paired(f"(a) {m} as found vs LeNet-5", found[m], lenet))
        out.append(_paired(f"(a) {m} as found vs its best initial trained as long", found[m],
                           longs.get(f"initial-long/{m}", {})))
    out.append(_paired("(a) random as found vs LeNet-5", found["random"], lenet))
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
    p.add_argument("--random-batches", type=int, help="SGD steps per random sample (LeNet-5's budget)")
    p.add_argument("--retrain-batches", type=int, help="SGD steps of measure (b) and of LeNet-5")
    p.add_argument("--retrains", type=int, help="trainings from scratch averaged in (b) and for LeNet-5 "
                   "(initialisation seeds)")
    p.add_argument("--final-batches", type=int, help="SGD steps of each best's final training, measure (a+)")
    p.add_argument("--seeds", type=int)
    p.add_argument("--first-seed", type=int)
    p.add_argument("--walk", type=int, help="random sampling: most mutations (default steps/pop)")
    p.add_argument("--sample-size", type=int, help="aging evolution's S")
    p.add_argument("--jobs", type=int, help="runs in parallel (processes, one thread each)")
    p.add_argument("--max-params", type=int)
    p.add_argument("--no-inherit", dest="inherit", action="store_false",
                   help="evolution's children train from scratch (the signal ranks architectures, not lineages)")
    p.add_argument("--reuse-baselines", type=Path, default=None,
                   help="take random sampling's and LeNet-5's results from a run saved with --json (same settings)")
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
    baselines = cached_baselines(s, args.reuse_baselines) if args.reuse_baselines else None
    executor = make_executor(s.jobs)
    try:
        results = run_all(s, executor, baselines)
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
    results = {k: data[k] for k in ("searches", "lenet", "long")}
    print(report(Settings(**data["settings"]), results, data["header"], data["seconds"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
