"""What a user reads at the end of a run: the best as found, its final training, what it cost, LeNet-5.

The test split is touched here only, for the best individual (on demand and at the end of a run),
never for selection. A child trains briefly (a short cosine cycle from its parent's weights), so
the best as found is under-trained for its architecture: the run ends by training the best again
(``final_batches``): by default its architecture from a fresh initialisation with LeNet-5's
recipe, on the training and validation splits together, as NAS papers retrain what they found
(Zoph & Le, NASNet, DARTS); ``final_from = "weights"`` trains the best on from its weights, as
Elsken et al. 2017 do, and ``final_data = "train"`` keeps validation out. The best's test
accuracy, the final model (record and safetensors weights) and the LeNet-5 reference are
create-once records in the store (``results/``), so they are computed once, survive a kill (the
next look redoes only what is missing) and every view sees the same figures.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from evolve.config import RunConfig
from evolve.final.once import once, waiting_line
from evolve.seeding import derive_seed
from evolve.store.backend import Store
from evolve.store.keys import LENET_KEY, record_key_of_final, record_key_of_tested, weights_key_of_final
from evolve.store.snapshot import Snapshot
from evolve.training.datasets import run_dataset
from genomes import genome_from_json


def kept_results(store: Store, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with what later looks kept for it (test accuracy, final model), computing nothing."""
    step = record["step"]
    tested = store.read_json(record_key_of_tested(step))
    out = dict(record)
    if out.get("test_accuracy") is None and tested is not None:
        out["test_accuracy"] = tested["test_accuracy"]
    out["final"] = store.read_json(record_key_of_final(step))
    return out


def lineage_batches(snapshot: Snapshot, step: int) -> int:
    """SGD batches that reached ``step``'s weights: its own, then its ancestors' while each inherited."""
    total = 0
    for record in reversed(snapshot.ancestry(step)):
        metrics = record.get("metrics") or {}
        total += int(metrics.get("batches", 0))
        if not metrics.get("inherited"):
            break
    return total


def compute_seconds(snapshot: Snapshot) -> float:
    """Worker-seconds spent on every step (a worker holds one core or one GPU share)."""
    return sum(float((r.get("timings") or {}).get("total_s", 0.0)) for r in snapshot.individuals.values())


def run_data(config: RunConfig):
    """The run's splits on its training device, as its workers load them."""
    from evolve.training.train import resolve_device, to_device

    return to_device(run_dataset(config), resolve_device(config.train.device))


def _trained_model(store: Store, record: dict[str, Any], data: Any) -> Any:
    """The individual's module with its stored weights, on the data's device; None without weights."""
    from evolve.training.train import build_module, weights_from_bytes

    blob = store.read_bytes(record["weights"]["key"]) if record.get("weights") else None
    if blob is None:
        return None
    model = build_module(genome_from_json(record["genome"]), data.input_shape, data.num_classes, 0)
    model.load_state_dict(weights_from_bytes(blob))
    return model.to(data.device)


def measured_test_accuracy(store: Store, config: RunConfig, record: dict[str, Any], data: Any = None,
                           on_wait: Waiting = None) -> float | None:
    """The individual's test accuracy: from its record, from an earlier look, or measured now and kept
    (once, whatever the number of drivers: ``evolve.final.once``)."""
    if record.get("test_accuracy") is not None:
        return float(record["test_accuracy"])
    step = record["step"]
    key = record_key_of_tested(step)
    kept = store.read_json(key)
    if kept is not None:
        return float(kept["test_accuracy"])
    if not record.get("weights") or not store.exists(record["weights"]["key"]):
        return None

    def measure() -> dict[str, Any]:
        from evolve.training.train import Trainer

        splits = data or run_data(config)
        model = _trained_model(store, record, splits)
        if model is None:  # deleted meanwhile: nothing to measure, nothing to keep
            return {"step": step, "test_accuracy": None}
        trainer = Trainer(splits, config.train, splits.device, max_params=10**12)
        result = {"step": step, "test_accuracy": trainer.accuracy(model, splits.x_test, splits.y_test),
                  "created_at": time.time()}
        store.create_json(key, result)
        return store.read_json(key) or result

    waiting = _told(on_wait, f"the test accuracy of individual {step}")
    accuracy = once(store, f"tested-{step}", key, measure, config.lease_seconds, waiting)["test_accuracy"]
    return None if accuracy is None else float(accuracy)


Waiting = Callable[[str], None] | None
"""Told one line when another driver computes what a call needs (``evolve.final.once``)."""

Stages = Callable[[str, int], Callable[[int], None]] | None
"""Told of each training after the search as it starts, (what, batches); returns what is told the batches
done as it goes (``Trainer.fit``'s ``on_batches``)."""

log = logging.getLogger("evolve.final")


@contextlib.contextmanager
def _stage(what: str, batches: int, on_stage: Stages) -> Iterator[Callable[[int], None] | None]:
    """One training after the search: on the cores free now (``evolve.training.threads``), logged as it starts
    and ends, its batches told to ``on_stage``'s updater."""
    from evolve.training.threads import free_cores, torch_threads

    threads = free_cores()
    log.info("%s: %s batches on %d torch thread%s", what, f"{batches:,}", threads, "s" if threads > 1 else "")
    started = time.perf_counter()
    with torch_threads(threads):
        yield on_stage(what, batches) if on_stage is not None else None
    log.info("%s: done in %.0f s", what, time.perf_counter() - started)


def _told(on_wait: Waiting, what: str) -> Callable[[dict[str, Any]], None] | None:
    return None if on_wait is None else (lambda holder: on_wait(waiting_line(what, holder)))


def final_model(store: Store, config: RunConfig, record: dict[str, Any], data: Any = None,
                on_wait: Waiting = None, on_stage: Stages = None) -> dict[str, Any] | None:
    """The best's final training (``final_batches``, ``final_from``, ``final_data``); kept in the store, and
    trained once whatever the number of drivers (``evolve.final.once``)."""
    step = record["step"]
    kept = store.read_json(record_key_of_final(step))
    if kept is not None or config.final_batches == 0:
        return kept
    weights = None
    if config.final_from == "weights":
        weights = store.read_bytes(record["weights"]["key"]) if record.get("weights") else None
        if weights is None:
            return None
    return once(store, f"final-{step}", record_key_of_final(step),
                lambda: _train_final_model(store, config, record, data, weights, on_stage), config.lease_seconds,
                _told(on_wait, f"the final training of individual {step}"))


def _train_final_model(store: Store, config: RunConfig, record: dict[str, Any], data: Any,
                       weights: bytes | None, on_stage: Stages = None) -> dict[str, Any]:
    import hashlib

    from evolve.training.train import weights_to_bytes

    step = record["step"]
    data = data or run_data(config)
    seed = derive_seed(config.seed, "final", step)
    with _stage(f"final training of individual {step}", config.final_batches, on_stage) as on_batches:
        model = final_start(genome_from_json(record["genome"]), config, data, seed, weights)
        trained = train_final(model, config, data, seed, on_batches)
    result: dict[str, Any] = {"step": step, **trained, "created_at": time.time()}
    weights = None
    if result["status"] == "ok":
        weights = weights_to_bytes(model)
        key = weights_key_of_final(step, uuid.uuid4().hex[:12])
        store.create_blob(key, weights)
        result["weights"] = {"key": key, "sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)}
    else:  # recorded, so that no later look trains it again
        result["weights"] = None
    if not store.create_json(record_key_of_final(step), result) and weights is not None:
        store.delete(result["weights"]["key"])
    return store.read_json(record_key_of_final(step)) or result


def final_start(genome: Any, config: RunConfig, data: Any, seed: int, weights: bytes | None = None) -> Any:
    """The module a final training starts from: ``genome`` initialised from ``seed``, with
    ``weights`` (safetensors bytes) loaded over it when ``final_from = "weights"``."""
    from evolve.training.train import build_module, weights_from_bytes

    model = build_module(genome, data.input_shape, data.num_classes, seed)
    if config.final_from == "weights" and weights is not None:
        model.load_state_dict(weights_from_bytes(weights))
    return model.to(data.device)


def final_recipe(config: RunConfig, channels: int) -> Any:
    """How the final model trains: LeNet-5's recipe from scratch, or the run's settings from the weights.

    From the weights, at the run's rate, not the lineage's: a genome's rate evolved for short
    fine-tuning cycles and is often far lower.
    """
    if config.final_from == "scratch":
        from evolve.training.lenet import recipe_for

        return recipe_for(config.train, channels, batches=config.final_batches, device=config.train.device)
    return config.train.model_copy(update={"batches": config.final_batches})


def final_splits(config: RunConfig, data: Any) -> Any:
    """The splits the final training reads: with ``final_data = "train+val"`` validation joins training."""
    if config.final_data == "train":
        return data
    import dataclasses

    import torch

    return dataclasses.replace(data, x_train=torch.cat([data.x_train, data.x_val]),
                               y_train=torch.cat([data.y_train, data.y_val]))


def train_final(model: Any, config: RunConfig, data: Any, seed: int,
                on_batches: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``model`` in place as the run's final training; the outcome as plain data.

    Accuracies are None after a NaN loss; the validation accuracy is None when validation was
    trained on (``final_data = "train+val"``).
    """
    from evolve.training.train import Trainer

    recipe = final_recipe(config, data.input_shape[0])
    trainer = Trainer(final_splits(config, data), recipe, data.device, max_params=10**12)
    fit = trainer.fit(model, recipe.learning_rate, recipe.batches, seed, on_batches=on_batches)
    out: dict[str, Any] = {"batches": recipe.batches, "from": config.final_from, "data": config.final_data,
                           "schedule": recipe.schedule, "learning_rate": recipe.learning_rate,
                           "train_seconds": fit.seconds}
    if not fit.finite:
        return {**out, "status": "failed", "reason": "nan loss", "val_accuracy": None, "test_accuracy": None}
    val = trainer.accuracy(model, data.x_val, data.y_val) if config.final_data == "train" else None
    return {**out, "status": "ok", "val_accuracy": val, "test_accuracy": trainer.accuracy(model, data.x_test, data.y_test)}


def describe_final(final: dict[str, Any]) -> str:
    """A final model in one line: how it was trained and what it scores (validation where measured)."""
    start = "from its weights" if final.get("from", "weights") == "weights" else "from scratch"
    scores = [f"{name} {100 * final[key]:.2f}%" for name, key in (("validation", "val_accuracy"), ("test", "test_accuracy"))
              if final.get(key) is not None]
    return (f"final model (the best trained {start}, {final['batches']:,} batches on {final.get('data', 'train')}): "
            f"{', '.join(scores) or 'not measured'}")


def lenet_reference(store: Store, config: RunConfig, data: Any = None, on_wait: Waiting = None,
                    on_stage: Stages = None) -> dict[str, Any]:
    """LeNet-5 trained with the recipe of ``evolve.training.lenet`` on the run's split; computed once per store,
    whatever the number of drivers (``evolve.final.once``)."""
    kept = store.read_json(LENET_KEY)
    if kept is not None:
        return kept

    def train() -> dict[str, Any]:
        from evolve.training.lenet import recipe_for, train_lenet

        splits = data or run_data(config)
        recipe = recipe_for(config.train, splits.input_shape[0], device=str(splits.device))
        with _stage("LeNet-5 reference", recipe.batches, on_stage) as on_batches:
            result = train_lenet(splits, config.seed, recipe, on_batches=on_batches)
        result.update(dataset=config.dataset, host=socket.gethostname(), pid=os.getpid())
        store.create_json(LENET_KEY, result)
        return store.read_json(LENET_KEY) or result

    return once(store, "lenet5", LENET_KEY, train, config.lease_seconds, _told(on_wait, "the LeNet-5 reference"))


def summary(store: Store, config: RunConfig, reference: bool = True, on_wait: Waiting = None,
            on_stage: Stages = None) -> dict[str, Any] | None:
    """The best individual as found, with its test accuracy, size, lineage training and the run's compute.
    ``on_wait``: told one line when another driver computes one of the stages (it is waited for);
    ``on_stage``: told of each training as it starts (``Stages``)."""
    snapshot = Snapshot.read(store)
    best = snapshot.best()
    if best is None:
        return None
    data = run_data(config) if config.fitness == "train" else None
    metrics = best.get("metrics") or {}
    initial = [r for s, r in snapshot.individuals.items() if s < config.population]
    final = final_model(store, config, best, data, on_wait, on_stage) if data is not None else None
    return {
        "step": best["step"], "fitness": best.get("fitness"), "val_accuracy": best.get("val_accuracy"),
        "test_accuracy": measured_test_accuracy(store, config, best, data, on_wait) if data is not None else None,
        "params": metrics.get("params"), "flops": metrics.get("flops"),
        "lineage_batches": lineage_batches(snapshot, best["step"]),
        "initial_best_val": max((r["fitness"] for r in initial), default=None),
        "individuals": len(snapshot.individuals), "compute_seconds": compute_seconds(snapshot),
        "genome": best["genome"], "final": final,
        "lenet5": lenet_reference(store, config, data, on_wait, on_stage) if reference and data is not None else None,
    }
