"""Population-based training: evolve's fixed genome against Ray Tune's PopulationBasedTraining, the peer a
user would pick, on the same task.

LeNet-5 (batch norm) on mnist-mini, 8 members, three genes with the same ranges in both (learning rate
log-uniform in [0.003, 0.3], momentum uniform in [0.5, 0.99], weight decay log-uniform in [1e-5, 1e-2]),
the same trainer (``evolve.training.train.Trainer``: batch 50, a constant rate, shifts of up to 2
pixels, a fresh SGD-Nesterov optimizer per interval), and the same total batches: 8 members x 8
intervals x 100 batches = 6,400.

* **evolve**: ``genome = "fixed"`` (LeNet-5), the three ``hparams``, weights inherited, tournament
  selection, population 8, 56 children of 100 batches each after the 8 initial members; two workers
  as Ray actors.
* **Ray Tune**: ``PopulationBasedTraining`` with its defaults (quantile 0.25, resample probability 0.25,
  perturbation factors 1.2 / 0.8) and ``perturbation_interval`` one interval of 100 batches; 8 trials,
  checkpointing the weights each interval, stopped once they have trained 6,400 batches in all (a
  ledger every interval appends to: Tune's iteration counter follows a donor's checkpoint); two
  concurrent trials on 2 CPUs.

Both select on validation accuracy and report, for the member with the best validation accuracy seen,
its test accuracy at that point (every interval's test accuracy is measured, never used). Wall time is
the search alone: Ray is started before and stopped after, for both.

    python3 bench/pbt.py                  # 3 seeds each: about 10 minutes on 2 cores
    python3 bench/pbt.py --smoke          # seconds: proves the pipeline, figures meaningless
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header, markdown_table  # noqa: E402
from ray.tune.stopper import Stopper  # noqa: E402

GENES = {"learning_rate": {"float": [0.003, 0.3], "log": True},
         "momentum": {"float": [0.5, 0.99], "log": False},
         "weight_decay": {"float": [1e-5, 1e-2], "log": True}}
TRAIN = {"batch_size": 50, "schedule": "constant", "augment": "shift", "shift": 2, "nesterov": True}


@dataclass(frozen=True)
class Settings:
    members: int = 8
    intervals: int = 8
    batches: int = 100
    seeds: int = 3
    first_seed: int = 0


SMOKE = Settings(members=4, intervals=2, batches=5, seeds=1)


@dataclass
class Result:
    tool: str
    seed: int
    best_val: float
    best_test: float
    batches: int
    seconds: float


# ----- evolve -------------------------------------------------------------------------------------


def run_evolve(s: Settings, seed: int, root: str) -> Result:
    import ray

    import evolve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        run = evolve.run(store=os.path.join(root, f"evolve-{seed}"), genome="fixed", dataset="mnist-mini",
                         seed=seed, population=s.members, steps=s.members * (s.intervals - 1), workers=2,
                         selection="tournament", hparams=GENES, final_batches=0, executor="ray",
                         train={**TRAIN, "batches": s.batches, "evaluate_test": True})
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    frame = run.individuals()
    best = frame.loc[frame["fitness"].idxmax()]
    return Result("evolve", seed, float(best["val_accuracy"]), float(best["test_accuracy"]),
                  int(len(frame) * s.batches), seconds)


# ----- Ray Tune -----------------------------------------------------------------------------------


def tune_member(config: dict[str, Any]) -> None:
    """One PBT trial: train LeNet-5 in intervals of ``batches``, reporting and checkpointing after each."""
    import torch
    from ray import tune
    from safetensors.torch import load_file, save_file

    from evolve.config import TrainConfig, build_config
    from evolve.training.datasets import run_dataset
    from evolve.training.train import Trainer, build_module, to_device
    from genomes import Fixed

    torch.set_num_threads(1)  # as evolve's workers train (self-contained: Ray pickles this function by value)
    data = to_device(run_dataset(build_config({"dataset": "mnist-mini", "seed": config["seed"]})))
    train = TrainConfig(**TRAIN, batches=config["batches"], learning_rate=config["learning_rate"],
                        momentum=config["momentum"], weight_decay=config["weight_decay"])
    trainer = Trainer(data, train, torch.device("cpu"), max_params=10**9)
    trial = tune.get_context().get_trial_id()
    model = build_module(Fixed("lenet5"), data.input_shape, data.num_classes, seed=hash(trial) % 2**31)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
    interval = 0
    while True:
        interval += 1
        trainer.fit(model, train.learning_rate, train.batches, seed=hash((trial, interval, time.time())) % 2**31)
        with open(config["ledger"], "a") as ledger:  # every interval trained, whatever Tune's counters say
            ledger.write(f"{trial} {train.batches}\n")
        val = trainer.accuracy(model, data.x_val, data.y_val)
        test = trainer.accuracy(model, data.x_test, data.y_test)
        with tempfile.TemporaryDirectory() as folder:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      os.path.join(folder, "model.safetensors"))
            tune.report({"val_accuracy": val, "test_accuracy": test},
                        checkpoint=tune.Checkpoint.from_directory(folder))


class Budget(Stopper):
    """A Tune stopper that ends the experiment once the trials have trained ``batches`` in all (counted in the
    ledger every interval appends to). Tune's per-trial iteration counter cannot hold the budget: a trial
    that exploits another takes on the donor's count with its checkpoint."""

    def __init__(self, ledger: str, batches: int) -> None:
        self.ledger, self.batches = ledger, batches

    def trained(self) -> int:
        if not os.path.exists(self.ledger):
            return 0
        with open(self.ledger) as lines:
            return sum(int(line.split()[1]) for line in lines)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        return self.trained() >= self.batches


def run_tune(s: Settings, seed: int, root: str) -> Result:
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    space = {"learning_rate": tune.loguniform(0.003, 0.3), "momentum": tune.uniform(0.5, 0.99),
             "weight_decay": tune.loguniform(1e-5, 1e-2)}
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=1,
                                  hyperparam_mutations=space)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ledger = os.path.join(root, f"pbt-{seed}-batches.txt")
    budget = Budget(ledger, s.members * s.intervals * s.batches)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(tune_member, {"cpu": 1}),
            param_space={**space, "seed": seed, "batches": s.batches, "ledger": ledger},
            tune_config=tune.TuneConfig(scheduler=pbt, num_samples=s.members, metric="val_accuracy", mode="max"),
            run_config=tune.RunConfig(name=f"pbt-{seed}", storage_path=os.path.join(root, "tune"), verbose=0,
                                      stop=budget,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=4)),
        )
        results = tuner.fit()
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    rows = [row for result in results for _, row in result.metrics_dataframe.iterrows()]
    best = max(rows, key=lambda row: row["val_accuracy"])
    return Result("ray-tune-pbt", seed, float(best["val_accuracy"]), float(best["test_accuracy"]), budget.trained(),
                  seconds)


# ----- report -------------------------------------------------------------------------------------


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def report(results: list[Result], s: Settings) -> str:
    rows = []
    for tool in ("evolve", "ray-tune-pbt"):
        mine = [r for r in results if r.tool == tool]
        test, test_se = mean_se([r.best_test for r in mine])
        val, _ = mean_se([r.best_val for r in mine])
        wall, wall_se = mean_se([r.seconds for r in mine])
        rows.append([tool, len(mine), f"{100 * test:.2f} ± {200 * test_se:.2f}", f"{100 * val:.2f}",
                     ", ".join(f"{100 * r.best_test:.2f}" for r in mine),
                     f"{wall:.0f} ± {2 * wall_se:.0f}", ", ".join(str(r.batches) for r in mine)])
    table = markdown_table(["tool", "seeds", "best member's test % (± 2 SE)", "its validation %",
                            "per seed", "wall s (± 2 SE)", "batches"], rows)
    ours = [r.best_test for r in results if r.tool == "evolve"]
    theirs = [r.best_test for r in results if r.tool == "ray-tune-pbt"]
    (a, a_se), (b, b_se) = mean_se(ours), mean_se(theirs)
    margin = math.sqrt(a_se ** 2 + b_se ** 2) if len(ours) > 1 else float("nan")
    verdict = (f"evolve − Ray Tune PBT: {100 * (a - b):+.2f} ± {200 * margin:.2f} points of test accuracy "
               f"(± 2 SE); the bar is evolve ≥ PBT − 2 SE ({'met' if a >= b - 2 * max(a_se, b_se) else 'NOT met'})")
    return f"{table}\n\n{verdict}\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=Settings.seeds)
    p.add_argument("--first-seed", type=int, default=Settings.first_seed)
    p.add_argument("--smoke", action="store_true", help="a tiny budget: proves the pipeline")
    p.add_argument("--tools", default="evolve,ray-tune-pbt")
    args = p.parse_args(argv)
    s = SMOKE if args.smoke else Settings(seeds=args.seeds, first_seed=args.first_seed)
    print(header(__file__, argv if argv is not None else sys.argv[1:]))
    seeds = f"{s.first_seed}..{s.first_seed + s.seeds - 1}"
    print(f"{s.members} members x {s.intervals} intervals x {s.batches} batches = "
          f"{s.members * s.intervals * s.batches:,} batches per run; seeds {seeds}\n", flush=True)
    results = []
    tools = args.tools.split(",")
    with tempfile.TemporaryDirectory() as root:
        for seed in range(s.first_seed, s.first_seed + s.seeds):  # interleaved: both see the same load
            for tool in tools:
                result = (run_evolve if tool == "evolve" else run_tune)(s, seed, root)
                results.append(result)
                print(f"  {tool} seed {seed}: best member test {100 * result.best_test:.2f}% "
                      f"(validation {100 * result.best_val:.2f}%), {result.batches:,} batches, "
                      f"{result.seconds:.0f} s", flush=True)
    if set(tools) == {"evolve", "ray-tune-pbt"}:
        print("\n" + report(results, s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
