"""The default run as a user meets it: `evolve run` on a fresh store, timed, for several run seeds.

For each seed it runs the README's command (``evolve run --seed S --store DIR``: Ray, the embedded
mnist-mini, every default), then reads the store:

* wall time of the whole command (Ray's start, the search, testing the best, LeNet-5's reference);
* the best individual's validation and test accuracy as found, and the final model's (the run's
  final training, ``evolve.final.final_model.train_final``: the model the user gets); its parameters, FLOPs,
  and the worker-seconds spent;
* LeNet-5 trained with the recipe of ``evolve.training.lenet`` on the same split (the run computes it);
* what evolution added: the best *initial* individual trained as the final model was. A final
  model trained from scratch (the default): the initial architecture gets the same recipe, data
  and batches. One trained on from the best's weights: the initial, from its own start, gets as
  many batches as the final model's whole lineage received, with the run's settings. The best
  must beat it by a clear margin, or the search only rode on a good starting point.

    python bench/demo.py                  # seeds 0, 1, 2 (about 9 minutes each on 2 cores)
    python bench/demo.py --seeds 0 --steps 20    # a quick look, figures meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header


def one_seed(seed: int, root: Path, extra: list[str]) -> dict[str, Any]:
    store = root / f"seed{seed}"
    command = [sys.executable, "-m", "evolve.cli.main", "run", "--seed", str(seed), "--store", str(store), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"seed": seed, "wall_s": wall, **measure(str(store))}


def measure(url: str) -> dict[str, Any]:
    """The run's summary (cached records) and its best initial individual trained as the final model was."""
    import torch

    from evolve.final.final_model import run_data, summary
    from evolve.runner.launch import load_run
    from evolve.store.backend import Store
    from evolve.store.keys import individual_key
    from genomes import genome_from_json

    torch.set_num_threads(1)
    store = Store.open(url, {}, create=False)
    config, _ = load_run(store)
    config = config.model_copy(update={"train": config.train.model_copy(update={"device": "cpu"})})
    result = summary(store, config)
    individuals = [store.read_json(individual_key(s)) for s in range(config.population)]
    initial = max(individuals, key=lambda r: (r["fitness"], -r["step"]))
    data = run_data(config)
    final = result["final"] or {"batches": 0, "val_accuracy": None, "test_accuracy": None}
    budget, long = initial_trained_as_long(config, data, initial, result["lineage_batches"])
    lenet = result["lenet5"]
    return {
        "best_val": result["val_accuracy"], "best_test": result["test_accuracy"], "params": result["params"],
        "flops": result["flops"], "lineage_batches": budget, "final_val": final["val_accuracy"],
        "final_test": final["test_accuracy"], "final_from": config.final_from, "final_data": config.final_data,
        "compute_s": result["compute_seconds"], "individuals": result["individuals"],
        "describe": genome_from_json(result["genome"]).describe(),
        "lenet_val": lenet["val_accuracy"], "lenet_test": lenet["test_accuracy"],
        "initial_step": initial["step"], "initial_val": initial["fitness"],
        "initial_long_val": long["val_accuracy"], "initial_long_test": long["test_accuracy"],
    }


def initial_trained_as_long(config: Any, data: Any, initial: dict[str, Any], lineage: int) -> tuple[int, dict[str, Any]]:
    """The best initial individual, from its own start, given the training that reached the final model.

    A final model trained from scratch received ``final_batches`` of the final recipe: the initial
    architecture gets exactly that (same recipe, data and seed rule). One trained on from the best's
    weights received its whole lineage's batches too: the initial gets that many, with the run's
    settings over the whole budget, then nothing else.
    """
    import torch

    from evolve.final.final_model import final_start, train_final
    from evolve.seeding import derive_seed
    from evolve.training.train import Trainer
    from genomes import genome_from_json

    genome = genome_from_json(initial["genome"])
    if config.final_batches and config.final_from == "scratch":
        seed = derive_seed(config.seed, "final", initial["step"])
        return config.final_batches, train_final(final_start(genome, config, data, seed), config, data, seed)
    budget = lineage + config.final_batches
    train = config.train.model_copy(update={"batches": budget, "evaluate_test": True})
    outcome = Trainer(data, train, torch.device("cpu"), config.max_params).train(genome, None, initial["seed"])
    return budget, {"val_accuracy": outcome.val_accuracy, "test_accuracy": outcome.test_accuracy}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| seed | wall | best as found: val | test | final model: val | test | params | MFLOPs | "
             "batches of the comparison | worker-min | LeNet-5 test | best initial: val at birth | trained as the final: test | "
             "best architecture |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['wall_s'] / 60:.1f} min | {r['best_val']:.4f} | {r['best_test']:.4f} | "
                     f"{_fmt(r['final_val'])} | {_fmt(r['final_test'])} | "
                     f"{r['params']:,} | {r['flops'] / 1e6:.2f} | {r['lineage_batches']:,} | "
                     f"{r['compute_s'] / 60:.1f} | {r['lenet_test']:.4f} | {r['initial_val']:.4f} | "
                     f"{_fmt(r['initial_long_test'])} | {r['describe']} |")
    if rows:
        tests = [r["final_test"] if r["final_test"] is not None else r["best_test"] for r in rows]
        gains = [t - r["initial_long_test"] for t, r in zip(tests, rows) if r["initial_long_test"] is not None] or [0.0]
        lines += ["", f"the model a user gets, test: mean {statistics.mean(tests):.4f}, min {min(tests):.4f}; "
                      f"LeNet-5 test: mean "
                      f"{statistics.mean(r['lenet_test'] for r in rows):.4f}; it minus the best initial trained the "
                      f"same way: mean {statistics.mean(gains):+.4f}, min {min(gains):+.4f}; wall: max "
                      f"{max(r['wall_s'] for r in rows) / 60:.1f} min"]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds")
    p.add_argument("--steps", type=int, default=None, help="override the default number of steps")
    p.add_argument("--keep", type=Path, default=None, help="keep the stores under this folder")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    extra = [] if args.steps is None else ["--steps", str(args.steps)]
    print(header("bench/demo.py", argv), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="evolve-demo-") as tmp:
        root = args.keep or Path(tmp)
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(one_seed(seed, root, extra))
            print(f"seed {seed}: {json.dumps(rows[-1])}", flush=True)
    print(table(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
