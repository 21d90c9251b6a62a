"""What `evolve finalize` adds, over seeds: snapshot and top-K ensembles and distillation against the single model.

For each seed: the default `evolve run` (through the API, Ray, 2 workers) into ``DIR/seed-<s>`` unless
a finished store is there already, then ``Run.finalize()`` with its defaults. The comparisons are
paired per seed, each at equal training where the issue asks for it:

* snapshot ensemble vs the retrained single model: the same training (the single model is its last
  snapshot);
* top-K ensemble vs the best single (the retrained best architecture);
* distilled vs retrained: the same architecture and student batches.
* pruned vs retrained, the model it pruned: the issue asks that pruning to <= 50% of the parameters
  cost <= 0.5 points (mean over seeds), so the mean is checked against -0.5, and the share of
  parameters kept is printed per seed.

    python bench/finalize.py --dir /tmp/finalize --seeds 0 1 2     # about 8 minutes a seed on 2 cores
    python bench/finalize.py --smoke                              # seconds: proves the pipeline
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header

SMOKE = {"population": 3, "steps": 3, "workers": 1, "dataset": "digits", "final_batches": 8,
         "train": {"batches": 3}}


def seed_rows(directory: Path, seed: int, smoke: bool, executor: str) -> tuple[dict[str, dict[str, Any]], float]:
    import evolve

    store = directory / f"seed-{seed}"
    started = time.perf_counter()
    if not (store / "run.json").exists() or evolve.open(str(store)).status()["done"] < evolve.open(str(store)).total:
        settings = SMOKE if smoke else {}
        evolve.run(store=str(store), seed=seed, executor=executor, **settings)
    run = evolve.open(str(store))
    run.result(reference=not smoke)  # the run's own end: the best tested, its final model, LeNet-5
    rows = run.finalize(**({"batches": 8, "cycles": 2} if smoke else {}))
    return {row["stage"]: row for row in rows}, time.perf_counter() - started


COMPARISONS = [
    ("snapshot ensemble vs the retrained model (same training)", "snapshots", "retrain"),
    ("top-K ensemble vs the best single (retrained)", "top", "retrain"),
    ("distilled vs retrained (same architecture and batches)", "distill", "retrain"),
]
PRUNE_LOSS_ALLOWED = 0.005  # of test accuracy, mean over seeds


def paired(per_seed: list[dict[str, dict[str, Any]]], a: str, b: str) -> tuple[float, float, int, int]:
    diffs = [s[a]["test_accuracy"] - s[b]["test_accuracy"] for s in per_seed if a in s and b in s]
    mean = statistics.fmean(diffs) if diffs else math.nan
    two_se = 2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return mean, two_se, sum(d > 0 for d in diffs), len(diffs)


def prune_lines(per_seed: list[dict[str, dict[str, Any]]], seeds: list[int]) -> list[str]:
    pairs = [(seed, s["prune"], s["retrain"]) for seed, s in zip(seeds, per_seed) if "prune" in s and "retrain" in s]
    if not pairs:
        return []
    diffs = [p["test_accuracy"] - r["test_accuracy"] for _, p, r in pairs]
    mean = statistics.fmean(diffs)
    two_se = 2 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    shares = ", ".join(f"seed {seed} {p['params'] / r['params']:.0%} ({100 * d:+.2f})" for (seed, p, r), d
                       in zip(pairs, diffs))
    held = all(p["params"] <= 0.5 * r["params"] for _, p, r in pairs) and mean >= -PRUNE_LOSS_ALLOWED
    return [f"- pruned vs retrained (the model it pruned): {100 * mean:+.2f} ± {100 * two_se:.2f} points, "
            f"parameters kept and difference: {shares}: "
            + ("holds (<= 50% of the parameters, mean loss <= 0.5 points)" if held else "does NOT hold")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/evolve-bench-finalize"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--executor", default="ray", choices=["ray", "local"])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    head = header("bench/finalize.py", argv)
    per_seed, seconds = [], []
    for seed in args.seeds:
        rows, took = seed_rows(args.dir, seed, args.smoke, "local" if args.smoke else args.executor)
        per_seed.append(rows)
        seconds.append(took)
        print(f"[seed {seed}] {took:.0f} s", file=sys.stderr, flush=True)
    names = list(per_seed[0])
    lines = [head, f"seeds {args.seeds}; stores under {args.dir}; wall {sum(seconds):.0f} s", "",
             "| model | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | parameters | MFLOPs | ms / image |",
             "|---|" + "---|" * (len(args.seeds) + 4)]
    for name in names:
        tests = [s.get(name, {}).get("test_accuracy") for s in per_seed]
        shown = [f"{100 * t:.2f}" if t is not None else "-" for t in tests]
        finite = [t for t in tests if t is not None]
        row = per_seed[0][name]
        infer = "" if row["infer_ms"] is None else f"{row['infer_ms']:.3f}"
        lines.append(f"| {row['model']} | " + " | ".join(shown) + f" | {100 * statistics.fmean(finite):.2f} | "
                     f"{row['params'] or 0:,} | {(row['flops'] or 0) / 1e6:.2f} | {infer} |")
    lines.append("")
    for label, a, b in COMPARISONS:
        mean, two_se, wins, n = paired(per_seed, a, b)
        verdict = "shown" if mean - two_se > 0 else "not shown"
        lines.append(f"- {label}: {100 * mean:+.2f} ± {100 * two_se:.2f} points (2 standard errors), better on "
                     f"{wins}/{n} seeds: {verdict}")
    lines += prune_lines(per_seed, args.seeds)
    print("\n".join(lines), flush=True)
    if args.json:
        args.json.write_text(json.dumps(per_seed, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
