"""Channel pruning of DNA networks: the pruned net computes what the masked one did; the Fisher probe."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genomes import DNA, GenomeError, SearchSpace
from genomes.dna_prune import FisherProbe, groups, prune

SHAPE, CLASSES = (1, 12, 12), 10
SPACE = SearchSpace(input_shape=SHAPE, num_classes=CLASSES, max_params=200_000,
                    options={"initial_convs": 2, "initial_channels": 4})


def _evolved(seed: int, mutations: int) -> DNA:
    rng = random.Random(seed)
    genome = DNA.initial(rng, SPACE)
    for _ in range(mutations):
        genome, _ = genome.mutate(rng, SPACE)
    return genome


def _trained_like(genome: DNA, seed: int) -> torch.nn.Module:
    """A module with random weights and batch-norm statistics (as if trained), in eval mode."""
    torch.manual_seed(seed)
    net = genome.to_module(SHAPE, CLASSES)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor))
    return net.eval()


def _masking(removed: dict[int, list[int]], found) -> object:
    """A vertex hook zeroing the removed channels of each group at every vertex that carries them."""
    masks = {}
    for group in found:
        mask = torch.ones(1, group.channels, 1, 1)
        mask[:, removed.get(group.conv, [])] = 0
        for vertex in group.vertices:
            masks[vertex] = mask
    return lambda vertex, value: value * masks[vertex] if vertex in masks else value


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), mutations=st.integers(0, 25), picks=st.integers(0, 2**31))
def test_the_pruned_net_computes_what_the_masked_net_did(seed, mutations, picks):
    genome = _evolved(seed, mutations)
    found = groups(genome, SHAPE, CLASSES)
    rng = random.Random(picks)
    removed: dict[int, list[int]] = {}
    for group in found:
        if group.channels < 2 or rng.random() < 0.3:
            continue
        count = rng.randint(1, group.channels - 1)
        removed[group.conv] = (list(range(group.channels - count, group.channels)) if group.suffix_only
                               else rng.sample(range(group.channels), count))
    net = _trained_like(genome, seed)
    x = torch.randn(3, *SHAPE)
    net.vertex_hook = _masking(removed, found)
    with torch.no_grad():
        expected = net(x)
    pruned, state = prune(genome, net.state_dict(), removed, SHAPE, CLASSES)
    assert DNA.from_json(pruned.to_json()) == pruned  # a valid genome again
    small = pruned.to_module(SHAPE, CLASSES)
    small.load_state_dict(state)
    with torch.no_grad():
        got = small.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    saved = sum(g.cost * len(removed.get(g.conv, [])) for g in found)
    if not any(g.conv in removed and any(g.conv != h.conv and set(g.vertices) & {e.src for e in genome.convs()
               if e.id == h.conv} and h.conv in removed for h in found) for g in found):
        # each group's cost counts what reads it at its old width: exact when no two adjacent groups both shrink
        assert genome.param_count(SHAPE, CLASSES) - pruned.param_count(SHAPE, CLASSES) == saved
    assert pruned.param_count(SHAPE, CLASSES) == sum(p.numel() for p in small.parameters())


def test_a_channel_before_the_last_of_a_skip_touched_group_may_not_go():
    for seed in range(200):
        genome = _evolved(seed, 30)
        touched = [g for g in groups(genome, SHAPE, CLASSES) if g.suffix_only and g.channels > 2]
        if touched:
            break
    else:
        pytest.skip("no evolved genome with a skip into a convolution's channels")
    group = touched[0]
    state = genome.to_module(SHAPE, CLASSES).state_dict()
    with pytest.raises(GenomeError, match="only the last ones may go"):
        prune(genome, state, {group.conv: [0]}, SHAPE, CLASSES)
    with pytest.raises(GenomeError, match="cannot remove"):
        prune(genome, state, {group.conv: list(range(group.channels))}, SHAPE, CLASSES)
    prune(genome, state, {group.conv: [group.channels - 1]}, SHAPE, CLASSES)


def test_the_fisher_probe_ranks_a_dead_channel_last_and_leaves_the_function_alone():
    genome = _evolved(3, 0)
    net = _trained_like(genome, 0).train()
    first = groups(genome, SHAPE, CLASSES)[0]
    with torch.no_grad():
        net.state_dict()[f"edges.e{first.conv}.weight"][1].zero_()  # channel 1 of the first conv is dead
        for v in first.vertices:
            for name in ("weight", "bias"):
                key = f"vertices.v{v}.bn.{name}"
                if key in net.state_dict():
                    net.state_dict()[key][1].zero_()
    x, y = torch.randn(8, *SHAPE), torch.randint(0, CLASSES, (8,))
    plain = torch.nn.functional.cross_entropy(net(x), y)
    probe = FisherProbe(net, groups(genome, SHAPE, CLASSES))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    assert torch.isclose(loss, plain) and probe.examples == 8
    scores = probe.estimates()[first.conv]
    assert scores[1] == 0 and bool((scores[[0, 2, 3]] > 0).all())
    probe.remove()
    assert net.vertex_hook is None
