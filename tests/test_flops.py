"""The FLOPs bound: each genome counts its FLOPs without torch, as torch counts them, and stays under the bound."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.config import RunConfig, build_config
from evolve.runner.presets import PRESETS
from evolve.training.train import count_flops
from genomes import DNA, GeneticCNN, GenomeError, SearchSpace

torch.set_num_threads(1)

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 15, 17)]


def random_dna(seed: int, length: int, shape: tuple[int, int, int], morphisms: bool) -> tuple[DNA, SearchSpace]:
    options = {"morphisms": morphisms, "initial_convs": 2 if morphisms else 0}
    space = SearchSpace(input_shape=shape, num_classes=10, max_params=400_000, options=options)
    rng = random.Random(seed)
    genome = DNA.initial(rng, space)
    for _ in range(length):
        genome, _ = genome.mutate(rng, space)
    return genome, space


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(0, 30), shape=st.sampled_from(SHAPES),
       morphisms=st.booleans())
def test_dna_flops_are_torchs_count(seed, length, shape, morphisms):
    genome, _ = random_dna(seed, length, shape, morphisms)
    module = genome.to_module(shape, 10).eval()
    assert genome.flops(shape, 10) == count_flops(module, torch.zeros(1, *shape))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(SHAPES),
       layout=st.sampled_from([((3, 5), (20, 50)), ((3, 4, 5), (8, 16, 32)), ((2,), (4,))]))
def test_gcnn_flops_are_torchs_count(seed, shape, layout):
    nodes, channels = layout
    space = SearchSpace(input_shape=shape, max_params=10**9, options={"nodes": list(nodes), "channels": list(channels)})
    genome = GeneticCNN.initial(random.Random(seed), space)
    module = genome.to_module(shape, 10).eval()
    assert genome.flops(shape, 10) == count_flops(module, torch.zeros(1, *shape))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bound=st.sampled_from([200_000, 600_000, 2_000_000]))
def test_dna_mutations_stay_under_max_flops(seed, bound):
    space = SearchSpace(input_shape=(1, 28, 28), num_classes=10, max_params=10**7, max_flops=bound,
                        options={"morphisms": True, "initial_convs": 1, "initial_channels": 4})
    rng = random.Random(seed)
    genome = DNA.initial(rng, space)
    assert genome.flops((1, 28, 28), 10) <= bound
    for _ in range(40):
        genome, _ = genome.mutate(rng, space)
        assert genome.flops((1, 28, 28), 10) <= bound


def test_without_the_bound_growth_passes_it():
    """The bound above binds: unbounded, forty mutations of the same start mostly pass 200,000 FLOPs."""
    space = SearchSpace(input_shape=(1, 28, 28), num_classes=10, max_params=10**7,
                        options={"morphisms": True, "initial_convs": 1, "initial_channels": 4})
    passed = 0
    for seed in range(10):
        rng = random.Random(seed)
        genome = DNA.initial(rng, space)
        for _ in range(40):
            genome, _ = genome.mutate(rng, space)
        passed += genome.flops((1, 28, 28), 10) > 200_000
    assert passed >= 5


def test_gcnn_respects_max_flops_and_names_the_bound():
    options = {"nodes": [3, 5], "channels": [20, 50], "q_m": 1.0}
    free = SearchSpace(input_shape=(1, 28, 28), max_params=10**9, options=options)
    some = GeneticCNN.initial(random.Random(0), free)
    smallest = GeneticCNN(tuple(s.with_bits("0" * len(s.bits)) for s in some.stages)).flops((1, 28, 28), 10)
    tight = SearchSpace(input_shape=(1, 28, 28), max_params=10**9, max_flops=smallest, options=options)
    assert GeneticCNN.initial(random.Random(0), tight).flops((1, 28, 28), 10) == smallest
    child, mutation = GeneticCNN.initial(random.Random(0), tight).mutate(random.Random(1), tight)
    assert mutation.params == {"reason": "over max_flops"}
    with pytest.raises(GenomeError, match=r"max_flops 1\b.*FLOPs"):
        GeneticCNN.initial(random.Random(0), SearchSpace(input_shape=(1, 28, 28), max_params=10**9, max_flops=1,
                                                         options=options))
    with pytest.raises(GenomeError, match="max_flops"):
        SearchSpace(max_flops=-1)


def test_the_flops_bound_defaults_by_genome_and_presets_lift_it():
    assert RunConfig().max_flops == 3_000_000
    assert RunConfig(genome="gcnn").max_flops == 0
    assert RunConfig(max_flops=0).max_flops == 0
    for name, preset in PRESETS.items():
        if name != "demo":
            assert build_config(preset.settings, "preset").max_flops == 0, name
