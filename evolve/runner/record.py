"""A run's definition as its store holds it: run.json (config and space, written once) and its
extensions. Read by the launcher, the worker's callers and the views alike (none imports another)."""

from __future__ import annotations

from typing import Any

from evolve.config import LEGACY_RUN, LEGACY_TRAIN, RunConfig, build_config, is_table
from evolve.store.backend import Store, StoreError
from evolve.store.keys import RUN_KEY, step_of
from evolve.store.records import schema_problem
from evolve.training.datasets import run_dataset
from evolve.training.tabular import table_of
from genomes import GenomeError, SearchSpace, genome_class

SYNTHETIC_SHAPE = (3, 32, 32)


def space_for(config: RunConfig) -> SearchSpace:
    """The search space: the input shape and outputs (the dataset's, or as configured for your own
    fitness), the parameter and FLOPs bounds, the genome's options. A shape the genome cannot serve
    is refused here (``GenomeError``), before anything is written."""
    if config.fitness != "train":
        shape = config.input_shape or SYNTHETIC_SHAPE
        classes = config.num_classes or 10
    else:
        data = run_dataset(config)
        shape, classes = tuple(data.input_shape), data.num_classes
    space = SearchSpace(input_shape=shape, num_classes=classes, max_params=config.max_params,
                        max_flops=config.max_flops, options=dict(config.genome_options), hparams=config.hparams)
    if is_table(config.fitness):  # a lookup: no network is ever built, but the table must be sound
        table_of(config)
    else:
        check_serves(config.genome, space)
    return space


def check_serves(kind: str, space: SearchSpace) -> None:
    """Build the genome's initial individual for ``space`` and run a zero input through it."""
    import random

    import torch

    from evolve.training.train import build_module

    try:
        genome = genome_class(kind).initial(random.Random(0), space)
        # built as a worker builds (under its lock, torch's generator put back): a draw from torch's global
        # generator here would change the weights of a child another thread of this process is initialising
        module = build_module(genome, tuple(space.input_shape), space.num_classes, seed=0)
        with torch.no_grad():
            out = module.eval()(torch.zeros(1, *space.input_shape))
    except GenomeError as exc:
        raise GenomeError(f"input_shape {tuple(space.input_shape)}: the {kind} genome cannot serve it: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise GenomeError(f"input_shape {tuple(space.input_shape)}: the {kind} genome cannot serve it "
                          f"({str(exc).splitlines()[0]})") from None
    if tuple(out.shape) != (1, space.num_classes):
        raise GenomeError(f"input_shape {tuple(space.input_shape)}: the {kind} genome's network gives outputs "
                          f"of shape {tuple(out.shape)[1:]}, not ({space.num_classes},)")


def space_from_json(data: dict[str, Any]) -> SearchSpace:
    return SearchSpace(input_shape=tuple(data["input_shape"]), num_classes=data["num_classes"],
                       max_params=data["max_params"], max_flops=data.get("max_flops", 0),
                       options=data.get("options", {}), hparams=data.get("hparams", {}))


def read_run_record(store: Store) -> dict[str, Any]:
    """run.json as stored (StoreError if the store holds no run)."""
    record = store.read_json(RUN_KEY)
    if record is None:
        raise StoreError(f"no evolve run at {store.url!r} (run.json missing)")
    return record


def load_run(store: Store) -> tuple[RunConfig, SearchSpace]:
    """The stored config (with any extension of its steps) and space of an existing run."""
    record = read_run_record(store)
    if (problem := schema_problem(record)) is not None:
        raise StoreError(f"{store.url}/run.json: {problem}")
    stored = dict(record["config"])  # a key it lacks was written before that setting existed: keep its behaviour
    stored["train"] = {**LEGACY_TRAIN, **stored.get("train", {})}
    stored = {**LEGACY_RUN, **stored}
    config = build_config(stored, f"{store.url}/run.json")
    extended = [step_of(k) for k in store.list_keys("extensions/") if k.endswith(".json")]
    if extended and max(extended) > config.steps:
        config = config.model_copy(update={"steps": max(extended)})
    return config, space_from_json(record["space"])


def total_steps(config: RunConfig) -> int:
    return config.population + config.steps
