"""Fisher pruning of a trained network to a parameter target (Theis et al. 2018, seed 001).

The network trains on while a probe (``genomes.pruning.FisherProbe``) estimates, for every
channel, how much the loss would rise without it; after each short round the channels that cost
least per parameter they hold go (a group's last channel never does; in a DNA group a skip
touches, only its last channel may; a Genetic CNN prunes per stage, see ``genomes.pruning``), the
network is rebuilt smaller as a valid genome of its kind with the kept weights, and the rounds go
on until the parameters are at or below the target.
A final cosine cycle fine-tunes the pruned network::

    while params(net) > target:
        train net for ROUND_BATCHES batches at rate r, summing each channel's Fisher estimate
        rank channels by estimate / parameters each holds; take out the cheapest, up to
            ROUND_SHARE of the prunable channels, stopping once their parameters cover the excess
        net <- the DNA without them, with the kept weights
    fine-tune net for F batches, cosine from r
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROUND_BATCHES = 25
ROUND_SHARE = 0.02  # of the prunable channels, at most, per round
RATE_SHARE = 0.3  # pruning and fine-tuning run at this share of the recipe's peak rate


@dataclass
class Pruned:
    genome: Any  # the pruned genome
    model: Any  # its module, fine-tuned
    params_before: int
    params: int
    rounds: int = 0
    removed: dict[int, int] = field(default_factory=dict)  # group id -> channels taken out
    seconds: float = 0.0
    finite: bool = True


def fisher_prune(genome: Any, state: dict[str, Any], splits: Any, recipe: Any, target: float, finetune: int,
                 seed: int, on_round: Callable[[int, int], None] | None = None) -> Pruned:
    """``genome`` with weights ``state`` pruned to at most ``target`` of its parameters, then fine-tuned for
    ``finetune`` batches on ``splits`` (a DeviceData) with ``recipe``'s batch size and augmentation (the
    result holds a new module). ``on_round(round, params)`` after each round."""
    from genomes.pruning import FisherProbe, groups, prune

    if not 0 < target < 1:
        raise ValueError(f"prune_target: a share of the parameters in (0, 1), got {target!r}")
    shape, classes = splits.input_shape, splits.num_classes
    before = genome.param_count(shape, classes)
    goal = math.floor(target * before)
    rate = RATE_SHARE * recipe.learning_rate
    steady = recipe.model_copy(update={"schedule": "constant", "warmup": 0.0})
    result = Pruned(genome=genome, model=None, params_before=before, params=before)
    model = _module(genome, state, splits)
    while (params := genome.param_count(shape, classes)) > goal:
        found = groups(genome, shape, classes)
        probe = FisherProbe(model, found)
        fit = _trainer(splits, steady).fit(model, rate, ROUND_BATCHES, seed + result.rounds)
        probe.remove()
        result.seconds += fit.seconds
        if not fit.finite:
            result.finite = False
            break
        remove = _cheapest(found, probe.estimates(), params - goal)
        if not remove:
            break  # every group is down to one channel
        genome, state = prune(genome, model.state_dict(), remove, shape, classes)
        model = _module(genome, state, splits)
        result.rounds += 1
        for group, channels in remove.items():
            result.removed[group] = result.removed.get(group, 0) + len(channels)
        if on_round:
            on_round(result.rounds, genome.param_count(shape, classes))
    if result.finite and finetune:
        fit = _trainer(splits, recipe.model_copy(update={"schedule": "cosine", "warmup": 0.0})).fit(
            model, rate, finetune, seed + 10**6)
        result.seconds += fit.seconds
        result.finite = fit.finite
    result.genome, result.model = genome, model
    result.params = genome.param_count(shape, classes)
    return result


def _cheapest(found: list[Any], estimates: dict[int, Any], excess: int) -> dict[int, list[int]]:
    """The channels to take out this round: lowest estimate per parameter first (see the module docstring)."""
    candidates = []
    for group in found:
        if group.channels < 2:
            continue
        scores = estimates[group.id]
        channels = [group.channels - 1] if group.suffix_only else range(group.channels)
        candidates += [(float(scores[c]) / group.cost, group.id, c) for c in channels]
    candidates.sort()
    budget = max(1, math.floor(ROUND_SHARE * len(candidates)))
    left = {g.id: g.channels for g in found}
    out: dict[int, list[int]] = {}
    covered = 0
    cost = {g.id: g.cost for g in found}
    for _, group, channel in candidates:
        if len(out.get(group, [])) + 1 >= left[group]:
            continue  # a group keeps at least one channel
        out.setdefault(group, []).append(channel)
        covered += cost[group]
        budget -= 1
        if budget == 0 or covered >= excess:
            break
    return out


def _module(genome: Any, state: dict[str, Any], splits: Any) -> Any:
    from evolve.training.train import build_module

    model = build_module(genome, splits.input_shape, splits.num_classes, 0)
    model.load_state_dict(state)
    return model.to(splits.device)


def _trainer(splits: Any, recipe: Any) -> Any:
    from evolve.training.train import Trainer

    return Trainer(splits, recipe, splits.device, max_params=10**12)


__all__ = ["Pruned", "fisher_prune"]
