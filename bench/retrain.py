"""An individual's architecture trained from scratch with LeNet-5's recipe, on its run's split.

Separates what a structure is worth from the training its run gave it (measure (b) of
``bench/quality.py``, for any store): the genome of ``--step`` (default: the run's best) is
built from a fresh initialisation and trained with ``evolve.training.lenet``'s recipe (one-cycle SGD
peaking at 0.1, Nesterov, weight decay 5e-4, the run's augmentation or the data's usual one) for
``--batches`` batches of 50, at the recipe's rate whatever rate the genome carries.

    python bench/retrain.py runs/gcnn-mnist              # the best, 1,500 batches
    python bench/retrain.py STORE --step 7 --batches 3000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header


def retrain(url: str, step: int | None = None, batches: int = 1500, seed: int = 0) -> dict[str, Any]:
    import torch

    from bench.quality import _AtRate
    from evolve.final.final_model import run_data
    from evolve.runner.launch import load_run
    from evolve.store.backend import Store
    from evolve.store.keys import individual_key
    from evolve.store.snapshot import Snapshot
    from evolve.training.lenet import recipe_for
    from evolve.training.train import Trainer
    from genomes import genome_from_json

    store = Store.open(url, {}, create=False)
    config, _ = load_run(store)
    config = config.model_copy(update={"train": config.train.model_copy(update={"device": "cpu"})})
    record = store.read_json(individual_key(step)) if step is not None else Snapshot.read(store).best()
    if record is None:
        raise SystemExit(f"--step: no individual {step} in {url}")
    data = run_data(config)
    recipe = recipe_for(config.train, data.input_shape[0], batches=batches).model_copy(update={"evaluate_test": True})
    genome = genome_from_json(record["genome"])
    outcome = Trainer(data, recipe, torch.device("cpu"), 10**12).train(_AtRate(genome, recipe.learning_rate),
                                                                       None, seed)
    return {"step": record["step"], "genome": genome.describe(), "batches": batches, "seed": seed,
            "val_accuracy": outcome.val_accuracy, "test_accuracy": outcome.test_accuracy,
            "status": outcome.status, "train_seconds": round(outcome.train_seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store", help="the run's store URL")
    p.add_argument("--step", type=int, default=None, help="the individual (default: the best)")
    p.add_argument("--batches", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(header("bench/retrain.py", argv), flush=True)
    print(json.dumps(retrain(args.store, args.step, args.batches, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
