"""How much the architecture matters in the default search space: random architectures, each trained alike.

``--samples`` architectures are drawn as ``bench/quality.py``'s random sampling draws them (the
default initial individual after k random mutations, k uniform in 0..``--walk``) and each is
trained from scratch with the LeNet-5 recipe and budget, measure (b) of ``bench/quality.py``. The
table gives the spread of their test accuracy and what random search that trains n of them and
keeps the best by validation accuracy can expect (Monte Carlo over subsets of the samples). A
search can only beat random sampling by a margin the space leaves above that expectation.

    python bench/space.py                 # 32 samples of seed 0's split, 2 processes
    python bench/space.py --smoke         # seconds: proves the pipeline, figures meaningless
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header
from bench.quality import Settings, make_executor, random_genome, retrain_job, run_job

BEST_OF = (1, 5, 15, 30)
DRAWS = 4000


def sample_jobs(s: Settings, seed: int, samples: int, walk: int) -> list[tuple[Any, ...]]:
    from bench.quality import _space
    from evolve.seeding import rng_for

    space = _space(s, seed)
    jobs = []
    for i in range(samples):
        genome, k = random_genome(s.genome, rng_for(seed, "space-sample", i), space, walk)
        jobs.append((retrain_job, (s, f"sample/{i}/{k}", seed, genome.to_json()), {}))
    return jobs


def expected_best(rows: list[dict[str, Any]], n: int, rng: random.Random) -> float | None:
    """Mean test accuracy of the best-by-validation among n samples drawn without replacement."""
    if n > len(rows):
        return None
    total = 0.0
    for _ in range(DRAWS):
        pick = max(rng.sample(rows, n), key=lambda r: r["val"])
        total += pick["test"]
    return total / DRAWS


def report(rows: list[dict[str, Any]], head: str, seconds: float, s: Settings, walk: int) -> str:
    tests = sorted(r["test"] for r in rows)
    q = statistics.quantiles(tests, n=4) if len(tests) > 1 else [tests[0]] * 3
    rng = random.Random(0)
    lines = [head, f"wall: {seconds:.0f} s; {len(rows)} architectures, walks of k in 0..{walk}, each trained "
             f"{s.retrain_batches} batches with the LeNet-5 recipe; dataset {s.dataset}", "",
             "| walk k | params | val | test | train s |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["test"]):
        lines.append(f"| {r['walk']} | {r['params']:,} | {r['val']:.4f} | {r['test']:.3f} | {r['wall_s']:.0f} |")
    lines += ["", f"test accuracy: min {tests[0]:.3f}, quartiles {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}, "
              f"max {tests[-1]:.3f}; share >= 0.980: {sum(t >= 0.98 for t in tests)}/{len(tests)}", "",
              "| random search trains n, keeps the best by val | expected test |", "|---|---|"]
    for n in BEST_OF:
        e = expected_best(rows, n, rng)
        if e is not None:
            lines.append(f"| n = {n} | {e:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="the data split and the draws")
    p.add_argument("--walk", type=int, default=28, help="most mutations from the initial individual "
                   "(bench/quality.py's default at population 10, 140 steps)")
    p.add_argument("--retrain-batches", type=int, default=None)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="3 samples, 5 batches each")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    s = Settings(jobs=args.jobs, retrains=1)  # each architecture trained once: the spread is the point
    samples = args.samples
    if args.smoke:
        s, samples = replace(s, retrain_batches=5, jobs=1), 3
    if args.retrain_batches:
        s = replace(s, retrain_batches=args.retrain_batches)
    head = header("bench/space.py", argv)
    start = time.perf_counter()
    executor = make_executor(s.jobs)
    try:
        futures = [executor.submit(run_job, job) for job in sample_jobs(s, args.seed, samples, args.walk)]
        rows = []
        for done, future in enumerate(futures, 1):
            r = future.result()
            _, i, k = r["kind"].split("/")
            rows.append({**r, "sample": int(i), "walk": int(k)})
            print(f"[{time.perf_counter() - start:5.0f} s] {done}/{samples} trained", file=sys.stderr, flush=True)
    finally:
        executor.shutdown()
    print(report(rows, head, time.perf_counter() - start, s, args.walk), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
