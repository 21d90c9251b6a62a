import dataclasses

import pytest
import torch

from evolve.config import TrainConfig
from evolve.training.datasets import load_dataset
from evolve.training.train import Trainer, to_device, weights_from_bytes
from genomes import DNA, SearchSpace


@pytest.fixture(scope="module")
def digits():
    return to_device(load_dataset("digits", seed=0), "cpu")


def grown(space: SearchSpace) -> DNA:
    """input -> conv 3x3x16 -> bn_relu -> conv 3x3x16 -> bn_relu -> head."""
    conv = {"op": "conv", "skip": False, "kernel": [3, 3], "stride": 1, "channels": 16}
    return DNA.from_json({
        "kind": "dna", "version": 1, "learning_rate": 0.05,
        "vertices": [{"id": 0, "activation": "linear"}, {"id": 1, "activation": "bn_relu"},
                     {"id": 2, "activation": "bn_relu"}],
        "edges": [{"id": 3, "src": 0, "dst": 1, **conv}, {"id": 4, "src": 1, "dst": 2, **conv}],
        "head_id": 5, "next_id": 6,
    })


def test_training_beats_chance_and_returns_safetensors(digits):
    space = SearchSpace(input_shape=digits.input_shape, num_classes=10)
    trainer = Trainer(digits, TrainConfig(batches=60), torch.device("cpu"), max_params=100_000)
    outcome = trainer.train(grown(space), None, seed=1)
    assert outcome.status == "ok" and outcome.fitness == outcome.val_accuracy
    assert outcome.fitness > 0.2 and outcome.test_accuracy is None  # the test split never selects
    tested = Trainer(digits, TrainConfig(batches=60, evaluate_test=True), torch.device("cpu"), 100_000)
    assert 0.0 <= tested.train(grown(space), None, seed=1).test_accuracy <= 1.0
    assert outcome.flops > 0 and outcome.params == grown(space).param_count(space.input_shape, 10)
    state = weights_from_bytes(outcome.weights)
    assert any(k.startswith("edges.") for k in state)


def test_child_inherits_and_training_is_seeded(digits):
    space = SearchSpace(input_shape=digits.input_shape, num_classes=10)
    trainer = Trainer(digits, TrainConfig(batches=20), torch.device("cpu"), max_params=100_000)
    genome = grown(space)
    parent = trainer.train(genome, None, seed=3)
    again = trainer.train(genome, None, seed=3)
    assert parent.fitness == again.fitness and parent.weights == again.weights
    child = trainer.train(genome, weights_from_bytes(parent.weights), seed=4)
    assert child.inherited == 1.0


def test_nan_loss_scores_zero_with_reason(digits):
    space = SearchSpace(input_shape=digits.input_shape, num_classes=10)
    genome = dataclasses.replace(grown(space), lr=1e12)
    trainer = Trainer(digits, TrainConfig(batches=60), torch.device("cpu"), max_params=100_000)
    outcome = trainer.train(genome, None, seed=0)
    assert (outcome.fitness, outcome.status, outcome.reason) == (0.0, "failed", "nan loss")


def test_over_parameter_bound_scores_zero_without_training(digits):
    space = SearchSpace(input_shape=digits.input_shape, num_classes=10)
    trainer = Trainer(digits, TrainConfig(batches=60), torch.device("cpu"), max_params=10)
    outcome = trainer.train(grown(space), None, seed=0)
    assert outcome.fitness == 0.0 and "max_params" in outcome.reason and outcome.train_seconds == 0.0


def test_dropout_draws_from_the_seed_not_from_what_the_process_did_before(digits):
    """Genetic CNN's dropout draws from a generator the trainer seeds from the child's seed, so a child is
    the same whatever the process drew earlier, and the process's own draws go on undisturbed."""
    import random

    from genomes import GeneticCNN

    space = SearchSpace(input_shape=digits.input_shape, max_params=10**7, options={"nodes": [3], "channels": [8]})
    genome = GeneticCNN.initial(random.Random(0), space)
    trainer = Trainer(digits, TrainConfig(batches=30, learning_rate=0.05), torch.device("cpu"), max_params=10**7)
    runs = []
    for draws in (0, 1000):
        torch.manual_seed(123)
        torch.rand(draws)
        state = torch.get_rng_state()
        runs.append(weights_from_bytes(trainer.train(genome, None, seed=5).weights))
        assert torch.equal(torch.get_rng_state(), state), "training leaves the process's generator where it was"
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("shares, cores, samples", [
    ([0.0, 0.48, 0.99], 2, 3),  # the search's Ray workers going away: busy for a second, then both cores free
    ([0.5, 0.5], 1, 2),  # another job on one core: one more look, then one thread
    ([1.0], 2, 1),  # idle: one look
    ([0.1, 0.2, 0.3, 0.4, 0.45, 0.9], 1, 5),  # at most four more looks
])
def test_free_cores_waits_out_processes_that_just_ended(monkeypatch, shares, cores, samples):
    """What `/proc/stat` showed over successive half-seconds (measured after `evolve.run` returned on Ray:
    0.00, 0.48, 0.99, 0.94, ...): the final training right after the search took one thread of two before."""
    from evolve.training import threads

    seen = iter(shares)
    taken = []
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "_idle_share", lambda seconds: taken.append(seconds) or next(seen))
    assert threads.free_cores() == cores and len(taken) == samples
