"""How a child's hyperparameter genes become its training settings with the built-in trainer.

A gene overrides the run's ``[train]`` setting of the same meaning for the child that carries it;
what no gene names stays as the run set it. Which genes the trainer reads, and the values each may
take, is ``evolve.config.TRAINER_GENES`` (the config checks a declaration before anything runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

TRAIN_FIELDS = ("learning_rate", "momentum", "weight_decay", "batch_size", "batches", "augment", "shift")
"""Genes that are TrainConfig fields of the same name."""


@dataclass(frozen=True)
class Settings:
    """A child's training as its genes make it: the run's TrainConfig fields overridden by its genes,
    and the settings TrainConfig has no field for."""

    train: Any  # TrainConfig
    optimizer: str
    label_smoothing: float = 0.0
    dropout: float = 0.0
    activation: str | None = None
    init: str | None = None


def settings_for(train: Any, genes: Mapping[str, Any]) -> Settings:
    """``train`` (a TrainConfig) with ``genes`` applied; genes the trainer does not read are ignored here
    (the config refused them before the run, where the built-in trainer is used)."""
    update = {name: genes[name] for name in TRAIN_FIELDS if name in genes}
    if "optimizer" in genes:
        optimizer = str(genes["optimizer"])
    else:
        optimizer = "nesterov" if train.nesterov else "sgd"
    return Settings(train=train.model_copy(update=update) if update else train, optimizer=optimizer,
                    label_smoothing=float(genes.get("label_smoothing", 0.0)), dropout=float(genes.get("dropout", 0.0)),
                    activation=genes.get("activation"), init=genes.get("init"))
