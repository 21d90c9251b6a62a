"""Genetic CNN genome: the paper's encoding, decoding, variation operators and JSON."""

from __future__ import annotations

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genomes.base import Genome, GenomeError, Mutation, SearchSpace, inherit_weights
from genomes.gcnn.genome import GeneticCNN, Stage, active_nodes, bit_index, group_code, stage_connections

torch.set_num_threads(1)

SHAPES = [(1, 28, 28), (3, 32, 32)]


def gcnn(*codes: str, channels: tuple[int, ...] | None = None) -> GeneticCNN:
    """A genome from grouped codes; node counts follow from the code lengths."""
    stages = []
    for s, code in enumerate(codes):
        nodes = code.count("-") + 2
        stages.append({"nodes": nodes, "channels": channels[s] if channels else 8 * 2**s, "code": code})
    return GeneticCNN.from_json({"kind": "gcnn", "version": 2, "stages": stages})


def module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- encoding and decoding


def test_seed_worked_example():
    # A2 <- A1; A3 has no coded input but feeds A4, so it is kept and reads the input node;
    # A4 <- A1, A2, A3 and is the only node feeding the output.
    assert stage_connections("1-00-111", 4) == {(0, 1), (0, 3), (1, 2), (1, 4), (2, 4), (3, 4), (4, 5)}
    assert active_nodes("1-00-111", 4) == {1, 2, 3, 4}


def test_bit_order_is_the_papers():
    assert [bit_index(i, j) for j in range(2, 5) for i in range(1, j)] == list(range(6))
    assert group_code("100111") == "1-00-111"
    assert group_code("1") == "1"
    assert gcnn("1-00-111").stages[0].bits == "100111"


def test_isolated_node_dropped():
    # node 1 has no coded edge at all; 2 and 3 read the input node and feed node 4
    assert stage_connections("0-00-011", 4) == {(0, 2), (0, 3), (2, 4), (3, 4), (4, 5)}
    genome = gcnn("0-00-011")
    keys = set(genome.to_module((3, 32, 32), 10).state_dict())
    assert not any(k.startswith("stages.0.nodes.1.") for k in keys)
    assert {"stages.0.nodes.2.conv.weight", "stages.0.nodes.4.conv.weight"} <= keys
    assert genome.stats((3, 32, 32), 10)["active_nodes"] == 3


def test_all_zero_stage_is_a_single_convolution():
    assert stage_connections("0-00", 3) == {(0, 4)}
    genome = gcnn("0-00")
    module = genome.to_module((3, 32, 32), 10)
    convs = [k for k in module.state_dict() if k.endswith("conv.weight")]
    assert convs == ["stages.0.input.conv.weight"]  # input and output node are one layer, not two
    assert genome.stats((3, 32, 32), 10) == {
        "stages": 1, "active_nodes": 0, "connections": 1, "params": module_params(module), "depth": 1,
    }
    assert genome.param_count((3, 32, 32), 10) == module_params(module) == (9 * 3 * 8 + 2 * 8) + (8 * 10 + 10)
    assert module(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_version_1_genomes_keep_their_two_layer_all_zero_stage_so_old_weights_load():
    from evolve.training.train import count_flops

    old = GeneticCNN.from_json({"kind": "gcnn", "version": 1, "stages": [
        {"nodes": 3, "channels": 8, "code": "0-00"}, {"nodes": 3, "channels": 8, "code": "1-01"}]})
    module = old.to_module((3, 32, 32), 10)
    assert {"stages.0.input.conv.weight", "stages.0.output.conv.weight"} <= set(module.state_dict())
    assert old.param_count((3, 32, 32), 10) == module_params(module)
    assert old.flops((3, 32, 32), 10) == count_flops(module, torch.zeros(1, 3, 32, 32))
    assert old.stats((3, 32, 32), 10)["depth"] == 2 + gcnn("1-01").stats((3, 32, 32), 10)["depth"]
    assert old.to_json()["version"] == 1 and GeneticCNN.from_json(old.to_json()) == old
    space = SearchSpace(options={"nodes": [3, 3], "channels": [8, 8], "q_m": 1.0, "q_c": 1.0})
    child, _ = old.mutate(random.Random(0), space)
    assert child.version == 1, "an old run's children decode as their parents do"
    new = GeneticCNN.from_json({**old.to_json(), "version": 2})
    assert "stages.0.output.conv.weight" not in new.to_module((3, 32, 32), 10).state_dict()
    assert GeneticCNN.initial(random.Random(0), space).version == 2
    with pytest.raises(GenomeError, match="versions differ"):
        old.crossover(new, random.Random(0), space)


@settings(max_examples=30, deadline=None)
@given(config=st.sampled_from([{}, {"nodes": [3, 5]}, {"nodes": [2, 4, 3, 6]}]),
       zero=st.lists(st.booleans(), min_size=4, max_size=4), seed=st.integers(0, 2**32 - 1),
       shape=st.sampled_from(SHAPES))
def test_param_count_equals_the_modules_for_zero_and_random_stages(config, zero, seed, shape):
    """Exact count without torch, for all-zero stages (one convolution) and random codes alike."""
    rng = random.Random(seed)
    shape_ = GeneticCNN.initial(rng, SearchSpace(options=config))
    codes = ["0" * len(s.bits) if zero[i] else "".join(rng.choice("01") for _ in s.bits)
             for i, s in enumerate(shape_.stages)]
    genome = GeneticCNN(tuple(s.with_bits(code) for s, code in zip(shape_.stages, codes)))
    module = genome.to_module(shape, 10)
    assert genome.param_count(shape, 10) == module_params(module)
    assert module(torch.randn(1, *shape)).shape == (1, 10)


def test_stats_describe_and_param_names():
    genome = gcnn("1-01", "1-00-111", "0-10-011-1010")
    assert genome.describe() == "gcnn: 3 stages 1-01 | 1-00-111 | 0-10-011-1010"
    stats = genome.stats((3, 32, 32), 10)
    # depths: 0-1-2-3-4 (4), 0-1-2-4-5 (5), 0-1-3-4-5-6 (6)
    assert stats["depth"] == 15 and stats["stages"] == 3
    module = genome.to_module((3, 32, 32), 10)
    keys = set(dict(module.named_parameters()))
    assert {"stages.0.input.conv.weight", "stages.1.nodes.3.conv.weight", "stages.2.output.bn.bias",
            "head.weight", "head.bias"} <= keys
    assert genome.param_count((3, 32, 32), 10) == module_params(module) == stats["params"]


def test_defaults_follow_the_paper():
    rng = random.Random(0)
    cifar = GeneticCNN.initial(rng, SearchSpace())
    assert [(s.nodes, s.channels) for s in cifar.stages] == [(3, 8), (4, 16), (5, 32)]
    mnist = GeneticCNN.initial(rng, SearchSpace(input_shape=(1, 28, 28), options={"nodes": [3, 5]}))
    assert [(s.nodes, s.channels) for s in mnist.stages] == [(3, 20), (5, 50)]
    four = GeneticCNN.initial(rng, SearchSpace(options={"nodes": (2, 2, 2, 2)}))
    assert [s.channels for s in four.stages] == [16, 32, 64, 128]
    assert isinstance(cifar, Genome) and cifar.learning_rate() is None
    assert GeneticCNN.kind == "gcnn" and GeneticCNN.supports_crossover


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depth": 3}, "options.depth"),
        ({"nodes": [3, 1]}, "options.nodes[1]"),
        ({"channels": [8, 16]}, "options.channels: expected 3 values"),
        ({"q_m": 1.5}, "options.q_m"),
        ({"q_c": "x"}, "options.q_c"),
    ],
)
def test_bad_options_rejected(options, message):
    with pytest.raises(GenomeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GeneticCNN.initial(random.Random(0), SearchSpace(options=options))


def test_json_round_trip_is_exact():
    data = {"kind": "gcnn", "version": 2, "stages": [
        {"nodes": 4, "channels": 16, "code": "1-00-111"}, {"nodes": 2, "channels": 3, "code": "0"}]}
    genome = GeneticCNN.from_json(data)
    assert genome.to_json() == data
    again = GeneticCNN.from_json(json.loads(json.dumps(genome.to_json())))
    assert again == genome and hash(again) == hash(genome)
    assert again.content_hash() == genome.content_hash()


def test_content_hash_tells_architectures_apart():
    base = gcnn("1-00-111")
    assert base.content_hash() == gcnn("1-00-111").content_hash()
    assert base.content_hash() != gcnn("1-00-110").content_hash()
    assert base.content_hash() != gcnn("1-00-111", channels=(32,)).content_hash()
    assert len(base.content_hash()) == 64


def _json(**stage):
    s = {"nodes": 4, "channels": 16, "code": "1-00-111"} | stage
    return {"kind": "gcnn", "version": 2, "stages": [{"nodes": 3, "channels": 8, "code": "1-01"}, s]}


@pytest.mark.parametrize(
    "data, message",
    [
        (_json(code="1-00"), "stages[1].code: expected 6 bits for 4 nodes, got '1-00'"),
        (_json(code="1-00-11x"), "stages[1].code: only '0', '1' and '-' allowed, got 'x'"),
        (_json(code="10-0-111"), "stages[1].code: wrong grouping, expected '1-00-111'"),
        (_json(code="100111"), "stages[1].code: wrong grouping"),
        (_json(code=101), "stages[1].code: expected a string"),
        (_json(nodes=1, code=""), "stages[1].nodes: expected an int >= 2, got 1"),
        (_json(channels=0), "stages[1].channels: expected an int >= 1, got 0"),
        (_json(channels=True), "stages[1].channels"),
        (_json(color="red"), "stages[1].color: unknown field"),
        ({"kind": "gcnn", "version": 2, "stages": [{"nodes": 3, "code": "1-01"}]},
         "stages[0].channels: missing"),
        ({"kind": "dna", "version": 1, "stages": []}, "kind: expected 'gcnn', got 'dna'"),
        ({"kind": "gcnn", "version": 3, "stages": []}, "version: expected one of [1, 2], got 3"),
        ({"kind": "gcnn", "version": 2, "stages": []}, "stages: expected a non-empty list"),
        ({"kind": "gcnn", "version": 2}, "stages: missing field"),
        ({"kind": "gcnn", "version": 2, "stages": [], "lr": 0.1}, "lr: unknown field"),
        ([1, 2], "must be an object"),
    ],
)
def test_bad_json_rejected(data, message):
    with pytest.raises(GenomeError) as info:
        GeneticCNN.from_json(data)
    assert message in str(info.value)


# ---------------------------------------------------------------- variation operators


def test_mutation_with_q_m_one_flips_every_bit():
    parent = gcnn("1-01", "1-00-111", "0-10-011-1010")
    child, mutation = parent.mutate(random.Random(1), SearchSpace(options={"q_m": 1.0}))
    assert mutation.name == "bit-flip"
    every_bit = [[s, b] for s, stage in enumerate(parent.stages) for b in range(len(stage.bits))]
    assert mutation.params["flipped"] == every_bit
    for mine, theirs in zip(parent.stages, child.stages):
        assert all(a != b for a, b in zip(mine.bits, theirs.bits))


def test_mutation_with_q_m_zero_flips_nothing():
    parent = gcnn("1-01", "1-00-111", "0-10-011-1010")
    child, mutation = parent.mutate(random.Random(1), SearchSpace(options={"q_m": 0.0}))
    assert child == parent and mutation == Mutation("identity", {"reason": "no bit flipped"})


def test_mutation_over_max_params_returns_parent():
    parent = gcnn("0-00", "0-00-000", "0-00-000-0000")
    space = SearchSpace(max_params=parent.param_count((3, 32, 32), 10), options={"q_m": 1.0})
    child, mutation = parent.mutate(random.Random(0), space)
    assert child is parent and mutation.name == "identity"
    assert mutation.params == {"reason": "over max_params"}


def test_initial_respects_max_params():
    with pytest.raises(GenomeError, match="max_params"):
        GeneticCNN.initial(random.Random(0), SearchSpace(max_params=1000))
    sparsest = gcnn("0-00", "0-00-000", "0-00-000-0000").param_count((3, 32, 32), 10)
    genome = GeneticCNN.initial(random.Random(0), SearchSpace(max_params=sparsest))
    assert genome.param_count((3, 32, 32), 10) == sparsest


def test_crossover_swaps_stages():
    a = gcnn("1-01", "1-00-111", "0-10-011-1010")
    b = gcnn("0-10", "0-11-000", "1-11-111-1111")
    x, y, mutation = a.crossover(b, random.Random(0), SearchSpace(options={"q_c": 1.0}))
    assert (x, y) == (b, a) and mutation.name == "crossover"
    assert mutation.params == {"swapped_stages": [0, 1, 2]}
    x, y, mutation = a.crossover(b, random.Random(0), SearchSpace(options={"q_c": 0.0}))
    assert (x, y) == (a, b) and mutation.params == {"swapped_stages": []}


def test_crossover_needs_equal_structure():
    with pytest.raises(GenomeError, match="stage structures differ"):
        gcnn("1-01").crossover(gcnn("1-00-111"), random.Random(0), SearchSpace())
    with pytest.raises(GenomeError, match="stage structures differ"):
        gcnn("1-01").crossover(gcnn("1-01", channels=(32,)), random.Random(0), SearchSpace())


def test_unchanged_child_inherits_everything():
    parent = gcnn("1-01", "1-00-111", "0-10-011-1010")
    child, mutation = parent.mutate(random.Random(0), SearchSpace(options={"q_m": 0.0}))
    torch.manual_seed(0)
    parent_module = parent.to_module((3, 32, 32), 10)
    parent_module.train()
    parent_module(torch.randn(4, 3, 32, 32))  # move the batch-norm statistics off their defaults
    parent_module.eval()
    child_module = child.to_module((3, 32, 32), 10).eval()
    inheritance = inherit_weights(child_module, parent_module.state_dict())
    assert inheritance.fraction == 1.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(parent_module(x), child_module(x))


def test_flip_keeps_unchanged_positions():
    parent = gcnn("1-01", "1-00-111")
    child = gcnn("1-01", "1-00-011")  # node 1 loses its edge to node 4 but stays active
    parent_state = parent.to_module((3, 32, 32), 10).state_dict()
    inheritance = inherit_weights(child.to_module((3, 32, 32), 10), parent_state)
    assert inheritance.fraction == 1.0
    dropped = gcnn("1-01", "0-00-011")  # node 1 now isolated: one layer fewer, the rest inherited
    inheritance = inherit_weights(dropped.to_module((3, 32, 32), 10), parent_state)
    assert inheritance.tensors == inheritance.tensors_total


# ---------------------------------------------------------------- crossover children and their weights


def filled(genome: GeneticCNN, value: float) -> bytes:
    """``genome``'s network as safetensors bytes, every tensor set to ``value`` (no fresh init is 3 or 5)."""
    from safetensors.torch import save

    state = genome.to_module((3, 32, 32), 10).state_dict()
    return save({k: torch.full_like(v, value) for k, v in state.items()})


def shares(module: torch.nn.Module, value: float) -> tuple[float, float]:
    """Share of the stages' parameter elements equal to ``value``, and of the head's."""
    stage = head = stage_total = head_total = 0
    for key, p in module.named_parameters():
        same = int((p == value).sum())
        if key.startswith("stages."):
            stage, stage_total = stage + same, stage_total + p.numel()
        else:
            head, head_total = head + same, head_total + p.numel()
    return stage / stage_total, head / head_total


def test_crossover_child_inherits_each_stage_from_the_parent_its_code_came_from():
    from safetensors.torch import load

    from evolve.engine.generational import crossover_weights, describe_ops, swapped_stages

    a = gcnn("1-01", "1-00-111", "0-10-011-1010")
    b = gcnn("0-10", "0-11-000", "1-11-111-1111")
    child, _, mutation = a.crossover(b, random.Random(0), SearchSpace(options={"q_c": 1.0}))
    assert child == b and mutation.params == {"swapped_stages": [0, 1, 2]}
    swapped = swapped_stages(describe_ops([mutation.to_json()]))  # the record a generational member carries
    assert swapped == [0, 1, 2]
    # the child's first parent is a (its unswapped stages' code); every stage came from b
    state = load(crossover_weights(filled(a, 3.0), filled(b, 5.0), swapped))
    module = child.to_module((3, 32, 32), 10)
    inheritance = child.inherit(module, state, mutation)
    assert inheritance.fraction == 1.0
    wrong, _ = shares(module, 3.0)
    right, head = shares(module, 5.0)
    assert wrong == 0.0 and right == 1.0  # 0% from the wrong parent, 100% from the right one
    assert head == 1.0 and shares(module, 3.0)[1] == 0.0  # the head reads the last stage: it goes with it

    # one stage swapped: stages 0 and 2 from a, stage 1 from b
    mixed = GeneticCNN((a.stages[0], b.stages[1], a.stages[2]))
    module = mixed.to_module((3, 32, 32), 10)
    mixed.inherit(module, load(crossover_weights(filled(a, 3.0), filled(b, 5.0), [1])), None)
    for key, p in module.named_parameters():
        expected = 5.0 if key.startswith("stages.1.") else 3.0  # the head with stage 2, from a
        assert torch.all(p == expected), key

    # the partner's weights missing: its stages train from scratch, never from the wrong parent
    module = child.to_module((3, 32, 32), 10)
    inheritance = child.inherit(module, load(crossover_weights(filled(a, 3.0), None, swapped)), mutation)
    assert shares(module, 3.0)[0] == 0.0 and inheritance.tensors == 0  # nothing, not even the head


@pytest.mark.parametrize("q_c", [0.0, 1.0])
def test_each_crossover_child_names_first_the_parent_of_its_unswapped_stages(q_c):
    from evolve.engine.generational import breed

    rng = random.Random(3)
    space = SearchSpace(options={"q_c": q_c})
    fitness = [0.1, 0.5, 0.6, 0.7, 0.8, 0.9]
    previous = [(10 + i, GeneticCNN.initial(rng, space), f) for i, f in enumerate(fitness)]
    genomes = {step: g for step, g, _ in previous}
    crossed = 0
    for seed in range(5):
        for member in breed(previous, random.Random(seed), space, p_m=0.0, p_c=1.0):
            first, second = member["parents"]
            source = first if q_c == 0.0 else second  # no stage swapped, or every stage swapped
            assert member["genome"] == genomes[source].to_json()
            crossed += first != second
    assert crossed


# ---------------------------------------------------------------- property: every chain decodes and runs

CONFIGS = [{}, {"nodes": [3, 5]}]


def _extreme(space: SearchSpace, bit: str) -> int:
    """Parameters of the space's network with every bit set to ``bit``."""
    shape = GeneticCNN.initial(random.Random(0), space)
    genome = GeneticCNN(tuple(s.with_bits(bit * len(s.bits)) for s in shape.stages))
    return genome.param_count(space.input_shape, space.num_classes)


@settings(max_examples=20, deadline=None)
@given(
    config=st.sampled_from(CONFIGS),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(0, 50),
    q_m=st.sampled_from([0.05, 0.2, 0.5]),
    crossover_every=st.integers(2, 10),
    tight=st.booleans(),
)
def test_any_chain_round_trips_decodes_and_runs(config, seed, steps, q_m, crossover_every, tight):
    rng = random.Random(seed)
    space = SearchSpace(max_params=200_000, options=config | {"q_m": q_m, "q_c": 0.3})
    if tight:  # a bound between the sparsest and the densest network, so it bites
        bound = (_extreme(space, "0") + _extreme(space, "1")) // 2
        space = SearchSpace(max_params=bound, options=space.options)
    genome = GeneticCNN.initial(rng, space)
    for step in range(steps):
        if step % crossover_every == 0:
            genome, _, _ = genome.crossover(GeneticCNN.initial(rng, space), rng, space)
        else:
            genome, _ = genome.mutate(rng, space)
        assert GeneticCNN.from_json(json.loads(json.dumps(genome.to_json()))) == genome
    assert genome.param_count(space.input_shape, space.num_classes) <= space.max_params
    for shape in SHAPES:
        module = genome.to_module(shape, 10)
        assert genome.param_count(shape, 10) == module_params(module)
        logits = module(torch.randn(2, *shape))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
        logits.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_stage_constructor_validates():
    with pytest.raises(GenomeError, match="bits"):
        Stage(4, 16, "1-00-111")
    with pytest.raises(GenomeError, match="nodes"):
        Stage(1, 16, "")
