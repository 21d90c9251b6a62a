"""The DNA genome: JSON, decoding, each mutation, weight inheritance, validation, the parameter bound."""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genomes.dna.genome as dna_module
import genomes.dna.mutations as mutations_module
from genomes.base import GenomeError, SearchSpace, inherit_weights
from genomes.dna.genome import DNA
from genomes.dna.mutations import MUTATIONS

torch.set_num_threads(1)

SPACE = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=200_000)
SHAPES = [(1, 28, 28), (3, 32, 32)]
SEEDS = range(12)

def conv(edge_id: int, src: int, dst: int, kernel: list[int], stride: int, channels: int) -> dict:
    return {"id": edge_id, "src": src, "dst": dst, "op": "conv", "skip": False,
            "kernel": kernel, "stride": stride, "channels": channels}  # fmt: skip


def ident(edge_id: int, src: int, dst: int, skip: bool = False) -> dict:
    return {"id": edge_id, "src": src, "dst": dst, "op": "identity", "skip": skip}


# 0 -conv3x3/8-> 1 -conv3x3s2/16-> 2 -id-> 3 -conv1x3/4-> 4, skips 0->2 (pad, shrink) and 1->4 (truncate)
PARENT_JSON = {
    "kind": "dna",
    "version": 1,
    "hparams": {"learning_rate": 0.05},
    "vertices": [
        {"id": 0, "activation": "linear"},
        {"id": 1, "activation": "bn_relu"},
        {"id": 2, "activation": "bn_relu"},
        {"id": 3, "activation": "linear"},
        {"id": 4, "activation": "bn_relu"},
    ],
    "edges": [
        conv(5, 0, 1, [3, 3], 1, 8),
        conv(6, 1, 2, [3, 3], 2, 16),
        ident(7, 2, 3),
        conv(8, 3, 4, [1, 3], 1, 4),
        ident(9, 0, 2, skip=True),
        ident(10, 1, 4, skip=True),
    ],
    "head_id": 11,
    "next_id": 12,
}


@pytest.fixture
def parent() -> DNA:
    return DNA.from_json(PARENT_JSON)


def roundtrip(genome: DNA) -> DNA:
    return DNA.from_json(json.loads(json.dumps(genome.to_json())))


def actual_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_decodes(genome: DNA) -> None:
    for shape in SHAPES:
        torch.manual_seed(0)
        module = genome.to_module(shape, 10)
        logits = module(torch.randn(2, *shape))
        assert logits.shape == (2, 10)
        assert torch.isfinite(logits).all()
        logits.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
        assert genome.param_count(shape, 10) == actual_params(module)


def edges_by_id(genome: DNA) -> dict[int, dna_module.Edge]:
    return {e.id: e for e in genome.edges}


def changed_edges(before: DNA, after: DNA) -> list[tuple[dna_module.Edge, dna_module.Edge]]:
    old, new = edges_by_id(before), edges_by_id(after)
    assert old.keys() == new.keys()
    return [(old[i], new[i]) for i in old if old[i] != new[i]]


def skip_pairs(genome: DNA) -> set[tuple[int, int]]:
    return {(e.src, e.dst) for e in genome.skips()}


# ----- the property: any chain of mutations stays valid, decodable and within bound ----------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(0, 50), bound=st.sampled_from([1_000, 200_000]))
def test_mutation_chains_stay_valid(seed: int, length: int, bound: int) -> None:
    space = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=bound)
    rng = random.Random(seed)
    genome = DNA.initial(rng, space)
    for _ in range(length):
        parent = genome
        genome, mutation = parent.mutate(rng, space)
        assert mutation.name in MUTATIONS
        json.dumps(mutation.to_json())
        assert roundtrip(genome) == genome
        assert roundtrip(genome).to_json() == genome.to_json()
        assert genome.param_count(space.input_shape, space.num_classes) <= space.max_params
        if mutation.name in ("identity", "alter-learning-rate", "reset-weights"):
            assert genome.content_hash() == parent.content_hash()
    check_decodes(genome)


# ----- JSON, decoding, summaries ------------------------------------------------------------


def test_initial_is_the_trivial_individual() -> None:
    genome = DNA.initial(random.Random(0), SPACE)
    assert len(genome.vertices) == 2 and genome.convs() == [] and genome.skips() == []
    assert genome.learning_rate() == 0.1
    assert [v.activation for v in genome.vertices] == ["linear", "linear"]
    assert genome.param_count((3, 32, 32), 10) == 3 * 10 + 10
    check_decodes(genome)


def test_json_roundtrip_is_exact(parent: DNA) -> None:
    assert parent.to_json() == PARENT_JSON
    assert roundtrip(parent) == parent
    assert hash(roundtrip(parent)) == hash(parent)


def test_json_written_before_genes_parses_to_the_same_genome(parent: DNA) -> None:
    old = {k: v for k, v in PARENT_JSON.items() if k != "hparams"} | {"learning_rate": 0.05}
    assert DNA.from_json(old) == parent
    assert DNA.from_json(old).to_json() == PARENT_JSON
    with pytest.raises(GenomeError, match="hparams"):
        DNA.from_json({**old, "hparams": {"learning_rate": 0.05}})


def test_decodes_with_shape_resolution(parent: DNA) -> None:
    check_decodes(parent)
    names = set(dict(parent.to_module((3, 32, 32), 10).named_parameters()))
    assert {"edges.e5.weight", "vertices.v1.bn.weight", "head.h11.weight", "head.h11.bias"} <= names


def test_skip_is_interpolated_and_padded() -> None:
    """Vertex 1 = conv(x) + nearest-downsampled x, zero-padded from 3 to 4 channels."""
    vertices = [{"id": 0, "activation": "linear"}, {"id": 1, "activation": "linear"}]
    edges = [conv(2, 0, 1, [1, 1], 2, 4), ident(3, 0, 1, skip=True)]
    genome = DNA.from_json({**PARENT_JSON, "vertices": vertices, "edges": edges, "head_id": 4, "next_id": 5})
    module = genome.to_module((3, 8, 8), 4)
    with torch.no_grad():
        module.edges["e2"].weight.zero_()
        module.head["h4"].weight.copy_(torch.eye(4))
        module.head["h4"].bias.zero_()
        x = torch.randn(2, 3, 8, 8)
        expected = torch.cat([x[:, :, ::2, ::2].mean(dim=(2, 3)), torch.zeros(2, 1)], dim=1)
        torch.testing.assert_close(module(x), expected)


def test_summaries(parent: DNA) -> None:
    assert parent.describe() == "dna: 5 vertices, 3 conv, 2 skip, lr 0.05"
    stats = parent.stats((3, 32, 32), 10)
    assert stats == {
        "depth": 3,
        "convs": 3,
        "skips": 2,
        "params": parent.param_count((3, 32, 32), 10),
        "learning_rate": 0.05,
        "vertices": 5,
    }
    assert parent.kind == "dna" and not parent.supports_crossover
    with pytest.raises(GenomeError, match="no crossover"):
        parent.crossover(parent, random.Random(0), SPACE)


def test_content_hash_ignores_ids_and_learning_rate(parent: DNA) -> None:
    rng = random.Random(0)
    reset, _ = MUTATIONS["reset-weights"](parent, rng, SPACE)
    faster, _ = MUTATIONS["alter-learning-rate"](parent, rng, SPACE)
    grown, _ = MUTATIONS["insert-convolution"](parent, rng, SPACE)
    assert reset.content_hash() == faster.content_hash() == parent.content_hash()
    assert grown.content_hash() != parent.content_hash()


# ----- each mutation does what its name says --------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_alter_learning_rate(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["alter-learning-rate"](parent, random.Random(seed), SPACE)
    assert 0.5 <= child.lr / parent.lr <= 2 and child.lr != parent.lr
    assert params == {"old": parent.lr, "new": child.lr}
    assert replace_lr(child, parent.lr) == parent


def replace_lr(genome: DNA, lr: float) -> DNA:
    return DNA.from_json({**genome.to_json(), "hparams": {"learning_rate": lr}})


def test_identity(parent: DNA) -> None:
    child, params = MUTATIONS["identity"](parent, random.Random(0), SPACE)
    assert child == parent and params == {}


def test_reset_weights_renames_everything(parent: DNA) -> None:
    child, _ = MUTATIONS["reset-weights"](parent, random.Random(0), SPACE)
    old_ids = {v.id for v in parent.vertices} | {e.id for e in parent.edges} | {parent.head_id}
    new_ids = {v.id for v in child.vertices} | {e.id for e in child.edges} | {child.head_id}
    assert not old_ids & new_ids
    assert len(new_ids) == len(old_ids) and child.next_id > max(new_ids)
    assert child.content_hash() == parent.content_hash()


@pytest.mark.parametrize("seed", SEEDS)
def test_insert_convolution(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["insert-convolution"](parent, random.Random(seed), SPACE)
    assert len(child.vertices) == len(parent.vertices) + 1
    assert len(child.convs()) == len(parent.convs()) + 1
    new = edges_by_id(child)[params["edge"]]
    assert new.is_conv and not new.skip and new.kernel == (3, 3) and new.stride in (1, 2)
    assert (new.src, new.dst) == (params["after"], params["vertex"])
    assert new.channels == parent.channels(3)[params["after"]]
    assert [v.id for v in child.vertices].index(new.dst) == [v.id for v in child.vertices].index(new.src) + 1
    assert skip_pairs(child) == skip_pairs(parent)
    moved = [(old, cur) for old, cur in zip(parent.edges, child.edges) if old != cur]
    assert all(old.src == new.src and cur == replace(old, src=new.dst) for old, cur in moved)
    assert child.channels(3)[child.output_id] == parent.channels(3)[parent.output_id]


@pytest.mark.parametrize("seed", SEEDS)
def test_remove_convolution(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["remove-convolution"](parent, random.Random(seed), SPACE)
    assert len(child.convs()) == len(parent.convs()) - 1
    assert len(child.vertices) == len(parent.vertices) - 1
    assert params["removed_vertex"] not in {v.id for v in child.vertices}
    assert params["edge"] not in edges_by_id(child)
    assert all(e.src != e.dst for e in child.edges)
    assert len(child.skips()) <= len(parent.skips())
    check_decodes(child)


def test_remove_convolution_merges_into_the_source() -> None:
    """Removing 1->2 sends skip 0->2 to 0->1 and 2's outgoing edge from 1; the output may move."""
    genome = DNA.from_json(PARENT_JSON)
    child = merge(genome, 6)
    assert [v.id for v in child.vertices] == [0, 1, 3, 4]
    assert edges_by_id(child)[7].src == 1 and skip_pairs(child) == {(0, 1), (1, 4)}
    last = merge(genome, 8)
    assert last.output_id == 3 and skip_pairs(last) == {(0, 2), (1, 3)}
    extra_skip = PARENT_JSON["edges"] + [ident(12, 0, 1, skip=True)]
    merged = merge(DNA.from_json({**PARENT_JSON, "edges": extra_skip, "next_id": 13}), 6)
    assert skip_pairs(merged) == {(0, 1), (1, 4)}
    assert 12 in edges_by_id(merged) and 9 not in edges_by_id(merged), "keeps the untouched duplicate"


def merge(genome: DNA, edge_id: int) -> DNA:
    for seed in range(200):
        child, params = MUTATIONS["remove-convolution"](genome, random.Random(seed), SPACE)
        if params["edge"] == edge_id:
            return child
    raise AssertionError(f"edge {edge_id} never drawn")


def test_remove_convolution_keeps_two_vertices() -> None:
    rng = random.Random(0)
    one_conv, _ = MUTATIONS["insert-convolution"](DNA.initial(rng, SPACE), rng, SPACE)
    stripped, _ = MUTATIONS["remove-convolution"](one_conv, rng, SPACE)
    assert stripped.to_json()["vertices"] == DNA.initial(rng, SPACE).to_json()["vertices"]
    edges = [conv(5, 0, 1, [3, 3], 1, 8)]
    two_vertices = {**PARENT_JSON, "vertices": PARENT_JSON["vertices"][:2], "edges": edges}
    assert not mutations_module.APPLICABLE["remove-convolution"](DNA.from_json(two_vertices), SPACE)


@pytest.mark.parametrize("seed", SEEDS)
def test_alter_stride(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["alter-stride"](parent, random.Random(seed), SPACE)
    [(old, new)] = changed_edges(parent, child)
    assert new == replace(old, stride=new.stride)
    ratio = math.log2(new.stride / old.stride)
    assert ratio != 0 and ratio == int(ratio) and 1 <= new.stride <= 8
    assert params == {"edge": old.id, "old": old.stride, "new": new.stride}


def test_alter_stride_respects_max_stride(parent: DNA) -> None:
    flat = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=200_000, options={"max_stride": 1})
    edges = [{**e, "stride": 1} if "stride" in e else e for e in PARENT_JSON["edges"]]
    strided = DNA.from_json({**PARENT_JSON, "edges": edges})
    assert not mutations_module.APPLICABLE["alter-stride"](strided, flat)
    rng = random.Random(0)
    for _ in range(100):
        child, mutation = strided.mutate(rng, flat)
        assert mutation.name != "alter-stride"
        assert all(e.stride == 1 for e in child.convs())
    with pytest.raises(GenomeError, match="space.options.colour"):
        parent.mutate(rng, SearchSpace(options={"colour": 1}))


@pytest.mark.parametrize("seed", SEEDS)
def test_alter_number_of_channels(parent: DNA, seed: int) -> None:
    child, _ = MUTATIONS["alter-number-of-channels"](parent, random.Random(seed), SPACE)
    [(old, new)] = changed_edges(parent, child)
    assert new == replace(old, channels=new.channels)
    assert new.channels != old.channels
    assert max(1, old.channels // 2) <= new.channels <= 2 * old.channels


@pytest.mark.parametrize("seed", SEEDS)
def test_filter_size(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["filter-size"](parent, random.Random(seed), SPACE)
    [(old, new)] = changed_edges(parent, child)
    assert new == replace(old, kernel=new.kernel)
    changed = [axis for axis in (0, 1) if old.kernel[axis] != new.kernel[axis]]
    assert len(changed) == 1
    size = new.kernel[changed[0]]
    assert size >= 1 and size % 2 == 1
    assert params["axis"] == ("kh", "kw")[changed[0]] and params["new"] == size


@pytest.mark.parametrize("seed", SEEDS)
def test_insert_one_to_one(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["insert-one-to-one"](parent, random.Random(seed), SPACE)
    assert len(child.vertices) == len(parent.vertices) + 1
    assert len(child.convs()) == len(parent.convs())
    new = edges_by_id(child)[params["edge"]]
    assert new.op == "identity" and not new.skip and (new.src, new.dst) == (params["after"], params["vertex"])
    assert skip_pairs(child) == skip_pairs(parent)


@pytest.mark.parametrize("seed", SEEDS)
def test_add_skip(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["add-skip"](parent, random.Random(seed), SPACE)
    assert skip_pairs(child) - skip_pairs(parent) == {(params["src"], params["dst"])}
    assert len(child.skips()) == len(parent.skips()) + 1
    position = child.position()
    assert position[params["src"]] < position[params["dst"]]


@pytest.mark.parametrize("seed", SEEDS)
def test_remove_skip(parent: DNA, seed: int) -> None:
    child, params = MUTATIONS["remove-skip"](parent, random.Random(seed), SPACE)
    assert skip_pairs(parent) - skip_pairs(child) == {(params["src"], params["dst"])}
    assert len(child.skips()) == len(parent.skips()) - 1


def test_inapplicable_mutations_are_never_drawn() -> None:
    genome = DNA.initial(random.Random(0), SPACE)
    needs_conv = {"remove-convolution", "alter-stride", "alter-number-of-channels", "filter-size"}
    inapplicable = needs_conv | {"remove-skip"}
    for name in inapplicable:
        with pytest.raises(GenomeError, match="not applicable"):
            MUTATIONS[name](genome, random.Random(0), SPACE)
    rng = random.Random(0)
    drawn = {genome.mutate(rng, SPACE)[1].name for _ in range(200)}
    assert drawn == set(MUTATIONS) - inapplicable


def test_mutations_leave_the_parent_alone(parent: DNA) -> None:
    snapshot = copy.deepcopy(parent.to_json())
    for name, mutation in MUTATIONS.items():
        mutation(parent, random.Random(1), SPACE)
    assert parent.to_json() == snapshot


# ----- weight inheritance ---------------------------------------------------------------------


def trained_module(genome: DNA) -> torch.nn.Module:
    """A decoded module whose batch-norm statistics have moved, so inheritance has something to copy."""
    torch.manual_seed(0)
    module = genome.to_module((3, 32, 32), 10)
    module.train()
    with torch.no_grad():
        module(torch.randn(4, 3, 32, 32))
    return module.eval()


@pytest.mark.parametrize("name", ["identity", "alter-learning-rate"])
def test_unchanged_architecture_inherits_everything(parent: DNA, name: str) -> None:
    old = trained_module(parent)
    child, _ = MUTATIONS[name](parent, random.Random(0), SPACE)
    torch.manual_seed(1)
    new = child.to_module((3, 32, 32), 10).eval()
    assert inherit_weights(new, old.state_dict()).fraction == 1.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(new(x), old(x))


def test_reset_weights_inherits_nothing(parent: DNA) -> None:
    child, _ = MUTATIONS["reset-weights"](parent, random.Random(0), SPACE)
    inherited = inherit_weights(child.to_module((3, 32, 32), 10), trained_module(parent).state_dict())
    assert inherited.fraction == 0 and inherited.tensors == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_insert_convolution_keeps_untouched_layers(parent: DNA, seed: int) -> None:
    old_state = trained_module(parent).state_dict()
    child, params = MUTATIONS["insert-convolution"](parent, random.Random(seed), SPACE)
    new = child.to_module((3, 32, 32), 10)
    inherit_weights(new, old_state)
    new_state = new.state_dict()
    assert all(torch.equal(new_state[key], value) for key, value in old_state.items())
    assert f"edges.e{params['edge']}.weight" not in old_state


@pytest.mark.parametrize("seed", SEEDS)
def test_filter_size_loses_only_that_conv(parent: DNA, seed: int) -> None:
    old_state = trained_module(parent).state_dict()
    child, params = MUTATIONS["filter-size"](parent, random.Random(seed), SPACE)
    new = child.to_module((3, 32, 32), 10)
    inherited = inherit_weights(new, old_state)
    fresh = {k for k, p in new.named_parameters() if not torch.equal(p.detach(), old_state[k])}
    assert fresh == {f"edges.e{params['edge']}.weight"}
    assert inherited.tensors == inherited.tensors_total - 1


# ----- invalid JSON -------------------------------------------------------------------------


def broken(path: str, value: object) -> dict:
    """PARENT_JSON with one field set (or deleted, for value None) at a dotted path like 'edges.0.stride'."""
    data = copy.deepcopy(PARENT_JSON)
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is None:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        ("hparams.learning_rate", None, ["hparams.learning_rate", "missing"]),
        ("hparams", None, ["hparams", "missing"]),
        ("hparams.dropout", [0.1], ["hparams.dropout", "[0.1]"]),
        ("edges.1.kernel", None, ["edges[1].kernel", "missing"]),
        ("vertices.2.activation", None, ["vertices[2].activation", "missing"]),
        ("edges.0.op", "pool", ["edges[0].op", "'pool'"]),
        ("vertices.1.activation", "tanh", ["vertices[1].activation", "'tanh'"]),
        ("edges.0.colour", "red", ["edges[0].colour", "unknown key"]),
        ("extra", 1, ["extra", "unknown key"]),
        ("edges.2.stride", 1, ["edges[2].stride", "identity"]),
        ("hparams.learning_rate", -0.1, ["hparams.learning_rate", "-0.1"]),
        ("hparams.learning_rate", True, ["hparams.learning_rate", "True"]),
        ("edges.0.stride", 3, ["edges[0].stride", "power of two in 1..8", "got 3"]),
        ("edges.0.stride", 16, ["edges[0].stride", "got 16"]),
        ("edges.0.kernel", [2, 3], ["edges[0].kernel", "odd", "[2, 3]"]),
        ("edges.0.channels", 0, ["edges[0].channels", "got 0"]),
        ("edges.4.dst", 99, ["edges[4].dst", "unknown vertex 99"]),
        ("edges.1.id", 5, ["edges[1].id", "duplicate id 5"]),
        ("head_id", 0, ["head_id", "duplicate id 0"]),
        ("next_id", 11, ["next_id", "got 11"]),
        ("edges.4.skip", False, ["vertices[2]", "2 backbone inputs"]),
        ("edges.2.skip", True, ["vertices[3]", "no backbone input"]),
        ("edges.2.src", 1, ["edges[2].src", "previous vertex 2"]),
        ("vertices.0.activation", "bn_relu", ["vertices[0].activation", "'bn_relu'"]),
        ("kind", "gcnn", ["kind", "'gcnn'"]),
        ("version", 2, ["version", "2"]),
        ("edges.4.op", "conv", ["edges[4].op", "skip edges must be 'identity'"]),
    ],
)
def test_bad_json_names_the_field(path: str, value: object, fragments: list[str]) -> None:
    with pytest.raises(GenomeError) as caught:
        DNA.from_json(broken(path, value))
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_cycle_is_named() -> None:
    data = copy.deepcopy(PARENT_JSON)
    data["edges"].append({"id": 12, "src": 3, "dst": 1, "op": "identity", "skip": True})
    data["next_id"] = 13
    with pytest.raises(GenomeError, match=r"cycle through vertices 1 -> 2 -> 3 -> 1"):
        DNA.from_json(data)
    data["edges"][-1] = {"id": 12, "src": 2, "dst": 2, "op": "identity", "skip": True}
    with pytest.raises(GenomeError, match=r"cycle through vertices 2 -> 2"):
        DNA.from_json(data)


def test_duplicate_skip_is_rejected() -> None:
    data = copy.deepcopy(PARENT_JSON)
    data["edges"].append({"id": 12, "src": 0, "dst": 2, "op": "identity", "skip": True})
    data["next_id"] = 13
    with pytest.raises(GenomeError, match=r"edges\[6\]: duplicate skip 0 -> 2"):
        DNA.from_json(data)


# ----- the parameter bound ------------------------------------------------------------------


def test_mutate_falls_back_to_identity_when_every_option_is_too_big(monkeypatch: pytest.MonkeyPatch) -> None:
    genome = DNA.initial(random.Random(0), SPACE)
    bound = genome.param_count((3, 32, 32), 10)
    tight = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=bound)
    monkeypatch.setattr(mutations_module, "MUTATIONS", {"insert-convolution": mutations_module.insert_convolution})
    child, mutation = genome.mutate(random.Random(0), tight)
    assert mutation.name == "identity" and child == genome


def test_mutate_never_exceeds_the_bound(parent: DNA) -> None:
    bound = parent.param_count((3, 32, 32), 10)
    tight = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=bound)
    rng = random.Random(0)
    names = set()
    for _ in range(200):
        child, mutation = parent.mutate(rng, tight)
        names.add(mutation.name)
        assert child.param_count((3, 32, 32), 10) <= bound
    assert "insert-convolution" not in names and "remove-convolution" in names


@given(st.integers(0, 2**32 - 1))
def test_channel_and_kernel_ranges_bound_every_mutation(seed):
    """max_channels and max_kernel (space options) hold for every child, as max_params does."""
    from genomes import SearchSpace, genome_class

    space = SearchSpace(input_shape=(1, 20, 12), num_classes=1, max_params=10**6,
                        options={"initial_convs": 2, "initial_channels": 4, "morphisms": True,
                                 "max_channels": 12, "max_kernel": 5})
    rng = random.Random(seed)
    genome = genome_class("dna").initial(rng, space)
    for _ in range(30):
        genome, _ = genome.mutate(rng, space)
        assert all(e.channels <= 12 and max(e.kernel) <= 5 for e in genome.convs())


def test_channel_and_kernel_ranges_are_checked_by_name():
    from genomes import GenomeError, SearchSpace, genome_class

    for options, message in [({"max_kernel": 4}, "max_kernel: must be odd"),
                             ({"initial_convs": 3, "initial_channels": 8, "max_channels": 16}, "max_channels: 16"),
                             ({"max_channels": -1}, "max_channels")]:
        with pytest.raises(GenomeError, match=message):
            genome_class("dna").initial(random.Random(0), SearchSpace(options=options))


def test_skip_resizing_picks_the_rows_torchs_nearest_interpolation_picks() -> None:
    import torch
    import torch.nn.functional as F

    from genomes.dna.net import _nearest

    for have in range(1, 100):
        x = torch.arange(have, dtype=torch.float32).view(1, 1, have, 1)
        for want in range(1, 100):
            expected = F.interpolate(x, size=(want, 1), mode="nearest").view(-1).long()
            assert torch.equal(_nearest(have, want, x.device), expected), (have, want)
