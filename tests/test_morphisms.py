"""Function-preserving DNA mutations: a child computes exactly its parent's function at birth."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from genomes import DNA, SearchSpace
from genomes.base import GenomeError, Mutation
from genomes.dna.mutations import (
    add_gated_skip,
    deepen,
    dna_options,
    grow_filter,
    insert_one_to_one_preserving,
    widen,
)

torch.set_num_threads(1)

SHAPES = [(1, 28, 28), (3, 32, 32)]
MORPHS = {
    "insert-convolution": deepen,
    "alter-number-of-channels": widen,
    "add-skip": add_gated_skip,
    "insert-one-to-one": insert_one_to_one_preserving,
    "filter-size": grow_filter,
}


def space(shape, **options) -> SearchSpace:
    return SearchSpace(input_shape=shape, num_classes=10, max_params=300_000,
                       options={"morphisms": True, "initial_convs": 2, "initial_channels": 4, **options})


def trained_like(module: torch.nn.Module, seed: int) -> None:
    """Move every parameter and batch-norm statistic away from its initial value, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            noise = torch.rand(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise)
            else:
                tensor.add_(0.3 * (noise - 0.5))


def random_parent(seed: int, shape, walk: int) -> tuple[DNA, SearchSpace]:
    """A genome reached from the stem by a random walk of every mutation (preserving or not)."""
    sp = space(shape)
    rng = random.Random(seed)
    genome = DNA.initial(rng, sp)
    for _ in range(walk):
        genome, _ = genome.mutate(rng, sp)
    return genome, sp


@pytest.mark.parametrize("name", sorted(MORPHS))
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), walk=st.integers(0, 12), shape=st.sampled_from(SHAPES))
def test_child_computes_its_parents_function_at_birth(name, seed, walk, shape) -> None:
    parent, sp = random_parent(seed, shape, walk)
    try:
        child, params = MORPHS[name](parent, random.Random(seed + 1), sp)
    except GenomeError:  # not applicable to this parent (e.g. no widenable conv)
        assume(False)
    torch.manual_seed(seed)
    before = parent.to_module(shape, 10)
    trained_like(before, seed)
    after = child.to_module(shape, 10)
    inheritance = child.inherit(after, before.state_dict(), Mutation(name, params))
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed))
    before.eval(), after.eval()
    with torch.no_grad():
        assert torch.allclose(before(x), after(x), atol=1e-4, rtol=1e-4), (name, parent.to_json(), params)
    assert inheritance.fraction > 0.0


def test_widening_copies_units_and_splits_their_outgoing_weights_unequally() -> None:
    parent, sp = random_parent(3, (1, 28, 28), 0)
    edge = parent.convs()[0]  # the stem's first conv: its consumer is the second conv
    for seed in range(50):
        child, params = widen(parent, random.Random(seed), sp)
        if params["edge"] == edge.id:
            break
    before, after = parent.to_module(sp.input_shape, 10), child.to_module(sp.input_shape, 10)
    child.inherit(after, before.state_dict(), Mutation("alter-number-of-channels", params))
    old, new = params["old"], params["new"]
    grown = after.state_dict()[f"edges.e{edge.id}.weight"]
    assert grown.shape[0] == new > old
    copies = [k for k in range(old, new)]
    originals = [next(j for j in range(old) if torch.equal(grown[k], grown[j])) for k in copies]
    consumer = parent.convs()[1].id
    split, whole = after.state_dict()[f"edges.e{consumer}.weight"], before.state_dict()[f"edges.e{consumer}.weight"]
    for k, j in zip(copies, originals):
        assert not torch.allclose(split[:, k], split[:, j]), "equal shares would keep the copies identical forever"
        group = [u for u in range(new) if u == j or (u >= old and originals[u - old] == j)]
        assert torch.allclose(split[:, group].sum(dim=1), whole[:, j], atol=1e-6)


def test_paper_mode_mutations_are_not_preserving_and_inherit_by_key_only() -> None:
    paper = SearchSpace(input_shape=(1, 28, 28), num_classes=10, max_params=300_000, options={"initial_convs": 2})
    rng = random.Random(0)
    genome = DNA.initial(rng, paper)
    for _ in range(30):
        genome, mutation = genome.mutate(rng, paper)
        assert "preserving" not in mutation.params


def test_morphism_mode_draws_by_weight_and_a_zero_weight_never_fires() -> None:
    sp = space((1, 28, 28), mutation_weights={"insert-convolution": 0, "alter-learning-rate": 0, "identity": 0})
    rng = random.Random(1)
    genome = DNA.initial(rng, sp)
    names = {genome.mutate(rng, sp)[1].name for _ in range(200)}
    assert not names & {"insert-convolution", "alter-learning-rate", "identity"}
    assert "alter-number-of-channels" in names


def test_options_are_checked_by_name() -> None:
    with pytest.raises(GenomeError, match="mutation_weights.grow"):
        dna_options(SearchSpace(options={"mutation_weights": {"grow": 1}}))
    with pytest.raises(GenomeError, match="initial_convs"):
        dna_options(SearchSpace(options={"initial_convs": -1}))
    with pytest.raises(GenomeError, match="morphisms"):
        dna_options(SearchSpace(options={"morphisms": "yes"}))


def test_stem_initial_individual_learns_shape() -> None:
    genome = DNA.initial(random.Random(0), space((1, 28, 28)))
    assert [e.stride for e in genome.convs()] == [2, 2] and [e.channels for e in genome.convs()] == [4, 8]
    assert DNA.initial(random.Random(0), SearchSpace()).convs() == []  # the paper's trivial individual
