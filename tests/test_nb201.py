"""NAS-Bench-201 genome: the benchmark's string form, uniform sampling, its mutation, crossover, JSON,
the published parameter counts, FLOPs as torch counts them, odd input sizes, weight inheritance."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from genomes.base import Genome, GenomeError, SearchSpace
from genomes.nb201 import NB201
from genomes.nb201.genome import EDGES, OPS, SPACE_SIZE, all_cells, format_arch, parse_arch, parse_options

torch.set_num_threads(1)

EXAMPLE = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"
FIRST_ROW = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
SPACE = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=2_000_000)
TABLES = [Path("/work/shared/data/nb201-cifar10.csv"),
          Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-cifar10.csv"]
CHI2_4DOF_P001 = 18.467  # chi-square critical value, 4 degrees of freedom, p = 0.001

cells = st.tuples(*[st.sampled_from(OPS)] * len(EDGES)).map(NB201)
seeds = st.integers(0, 2**32 - 1)


def module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def torch_flops(module: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module.eval()(torch.zeros(1, *shape))
    return int(counter.get_total_flops())


def published_params(genome: NB201) -> int:
    """The benchmark's CIFAR-10 count (C = 16, N = 5, 3x32x32, 10 classes), by edge."""
    return 73_306 + 243_040 * genome.ops.count("nor_conv_3x3") + 28_000 * genome.ops.count("nor_conv_1x1")


# ---------------------------------------------------------------- the string form


def test_the_string_form_is_the_benchmarks():
    genome = NB201.from_string(EXAMPLE)
    assert genome.ops == ("nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3")
    assert EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert genome.to_string() == EXAMPLE == format_arch(genome.ops)
    assert genome.describe() == "nb201: " + EXAMPLE
    assert isinstance(genome, Genome) and NB201.supports_crossover


def test_every_cell_round_trips_through_string_and_json():
    seen_strings, seen_hashes = set(), set()
    for ops in all_cells():
        genome = NB201(ops)
        text = genome.to_string()
        assert parse_arch(text) == ops
        assert NB201.from_json(json.loads(json.dumps(genome.to_json()))) == genome
        seen_strings.add(text)
        seen_hashes.add(genome.content_hash())
    assert len(seen_strings) == len(seen_hashes) == SPACE_SIZE == 15_625


def test_every_row_of_the_benchmark_table_parses():
    table = next((path for path in TABLES if path.exists()), None)
    if table is None:
        pytest.skip("the NAS-Bench-201 table (shared/data/nb201-cifar10.csv) is not in this checkout")
    with table.open(newline="") as f:
        archs = [row["arch"] for row in csv.DictReader(f)]
    assert len(archs) == len(set(archs)) == SPACE_SIZE
    for arch in archs:
        assert NB201.from_string(arch).to_string() == arch
    assert archs[0] == FIRST_ROW


@pytest.mark.parametrize("text, says", [
    (42, "expected the benchmark's string"),
    ("|nor_conv_3x3~0|+|skip_connect~0|none~1|", "expected 3 nodes joined by '+', got 2"),
    (EXAMPLE.replace("|+|skip", "+|skip"), "node 1 must be written '|op~i|...|'"),
    ("|nor_conv_3x3~0|+|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|", "node 2 takes 2 edges"),
    (EXAMPLE.replace("none~1", "none~0"), "edge 'none~0' of node 2 must come from node 1"),
    (EXAMPLE.replace("none~1", "none"), "edge 'none' of node 2 must be 'op~1'"),
    (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "unknown op 'max_pool_3x3' in edge 'max_pool_3x3~1'"),
    (EXAMPLE.replace("|+|", "| + |", 1), "node 1 must be written"),
    (EXAMPLE + "+|none~0|", "expected 3 nodes"),
])
def test_a_malformed_string_is_refused_quoting_it(text, says):
    with pytest.raises(GenomeError, match="arch") as error:
        NB201.from_string(text)
    assert says in str(error.value)
    if isinstance(text, str):
        assert repr(text) in str(error.value)


# ---------------------------------------------------------------- JSON and validation


def test_json_is_checked_field_by_field():
    good = NB201.from_string(EXAMPLE).to_json()
    assert good == {"kind": "nb201", "version": 1, "edges": list(NB201.from_string(EXAMPLE).ops),
                    "channels": 16, "cells": 5}
    cases = [
        ({**good, "kind": "gcnn"}, "kind: expected 'nb201', got 'gcnn'"),
        ({**good, "version": 2}, "version: expected 1, got 2"),
        ({**good, "version": True}, "version: expected 1, got True"),
        ({**good, "edges": good["edges"][:5]}, "edges: expected a list of 6 ops"),
        ({**good, "edges": EXAMPLE}, "edges: expected a list of 6 ops"),
        ({**good, "edges": [*good["edges"][:4], "conv_5x5", good["edges"][5]]}, "edges[4]: expected one of"),
        ({**good, "channels": 0}, "channels: expected an int >= 1, got 0"),
        ({**good, "cells": "5"}, "cells: expected an int >= 1, got '5'"),
        ({**good, "arch": EXAMPLE}, "arch: unknown field"),
        ({k: v for k, v in good.items() if k != "cells"}, "cells: missing field"),
    ]
    for data, says in cases:
        with pytest.raises(GenomeError) as error:
            NB201.from_json(data)
        assert says in str(error.value), (data, str(error.value))
    with pytest.raises(GenomeError, match="must be an object"):
        NB201.from_json([])  # type: ignore[arg-type]
    with pytest.raises(GenomeError, match=r"ops\[2\]: expected one of"):
        NB201(("none", "none", "zero", "none", "none", "none"))


def test_genomes_are_immutable_values():
    genome = NB201(["none"] * 6)  # type: ignore[arg-type]
    assert genome.ops == ("none",) * 6 and hash(genome) == hash(NB201(("none",) * 6))
    with pytest.raises(AttributeError):
        genome.ops = ("skip_connect",) * 6  # type: ignore[misc]
    assert genome.learning_rate() is None
    assert NB201(genome.ops, channels=8).content_hash() != genome.content_hash()


def test_options_default_to_the_benchmark_and_refuse_unknown_keys():
    assert parse_options({}) == parse_options({"channels": 16, "cells": 5})
    genome = NB201.sample(random.Random(0), SearchSpace(options={"channels": 8, "cells": 2}))
    assert (genome.channels, genome.cells) == (8, 2)
    assert genome.describe().endswith("(channels 8, cells 2)")
    with pytest.raises(GenomeError, match=r"options\.nodes: unknown NAS-Bench-201 option"):
        NB201.sample(random.Random(0), SearchSpace(options={"nodes": 3}))
    with pytest.raises(GenomeError, match=r"options\.cells: expected an int >= 1, got 0"):
        parse_options({"cells": 0})


# ---------------------------------------------------------------- sampling


def chi_square(counts: Counter, draws: int) -> float:
    expected = draws / len(OPS)
    return sum((counts[op] - expected) ** 2 / expected for op in OPS)


def test_uniform_draws_cover_every_op_on_every_edge():
    rng, draws = random.Random(201), 5_000
    sampled = [NB201.sample(rng, SPACE) for _ in range(draws)]
    for e in range(len(EDGES)):
        assert chi_square(Counter(g.ops[e] for g in sampled), draws) < CHI2_4DOF_P001, e
    assert NB201.initial(random.Random(3), SPACE) == NB201.sample(random.Random(3), SPACE)


def test_the_chi_square_check_rejects_a_biased_sampler():
    """The check above has teeth: 'none' at 24% instead of 20% is refused."""
    rng, draws = random.Random(201), 5_000
    weights = [0.24] + [0.19] * 4
    counts = Counter(rng.choices(OPS, weights)[0] for _ in range(draws))
    assert chi_square(counts, draws) > CHI2_4DOF_P001


def test_sampling_under_a_tight_bound_stays_within_it_and_names_an_impossible_one():
    # room for at most one 3x3 edge: most uniform cells have more, so rejection and enumeration both run
    bound = 73_306 + 243_040 + 28_000
    tight = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=bound)
    drawn = [NB201.sample(random.Random(seed), tight) for seed in range(30)]
    assert all(g.param_count((3, 32, 32), 10) <= bound for g in drawn)
    assert len(set(drawn)) > 20  # a uniform member each time, not one fallback cell
    assert len(NB201(("none",) * 6).admissible(tight)) == sum(
        1 for ops in all_cells() if published_params(NB201(ops)) <= bound)
    with pytest.raises(GenomeError, match=r"max_params 1,000: below the smallest network .*73,306 parameters"):
        NB201.sample(random.Random(0), SearchSpace(max_params=1_000))
    with pytest.raises(GenomeError, match=r"max_flops 5: below the smallest"):
        NB201.initial(random.Random(0), SearchSpace(max_flops=5))


# ---------------------------------------------------------------- mutation and crossover


@settings(max_examples=200, deadline=None)
@given(genome=cells, seed=seeds)
def test_mutation_changes_exactly_one_edge_to_another_op(genome, seed):
    child, mutation = genome.mutate(random.Random(seed), SPACE)
    changed = [e for e in range(len(EDGES)) if child.ops[e] != genome.ops[e]]
    assert mutation.name == "edge" and changed == [mutation.params["edge"]]
    e = changed[0]
    assert mutation.params == {"edge": e, "from": genome.ops[e], "to": child.ops[e]}
    assert (child.channels, child.cells) == (genome.channels, genome.cells)
    assert json.loads(json.dumps(mutation.to_json()))["params"] == mutation.params


def test_mutation_picks_edges_and_new_ops_uniformly():
    rng, genome, draws = random.Random(7), NB201(("none",) * 6), 6_000
    picks = [genome.mutate(rng, SPACE)[1].params for _ in range(draws)]
    edges = Counter(p["edge"] for p in picks)
    assert sum((edges[e] - draws / 6) ** 2 / (draws / 6) for e in range(6)) < 20.515  # 5 dof, p = 0.001
    ops = Counter(p["to"] for p in picks)
    assert set(ops) == set(OPS) - {"none"}
    assert sum((ops[o] - draws / 4) ** 2 / (draws / 4) for o in ops) < 16.266  # 3 dof, p = 0.001


def test_a_mutation_over_the_bound_is_redrawn_then_gives_up():
    tiny = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=73_306)  # no convolution fits
    one_conv = NB201(("nor_conv_1x1",) + ("none",) * 5)  # fitting children must drop edge 0's conv: 1 in 8 draws
    results = [one_conv.mutate(random.Random(s), tiny) for s in range(40)]
    assert {m.name for _, m in results} == {"edge", "identity"}
    assert all(tiny.admits(child) for child, m in results if m.name == "edge")
    all_1x1 = NB201(("nor_conv_1x1",) * 6)  # every child keeps five 1x1 edges: none fits
    parent, mutation = all_1x1.mutate(random.Random(0), tiny)
    assert parent is all_1x1 and mutation.params == {"reason": "over max_params"}
    flops_bound = SearchSpace(max_flops=NB201(("none",) * 6).flops((3, 32, 32), 10))
    assert all_1x1.mutate(random.Random(0), flops_bound)[1].params == {"reason": "over max_flops"}
    a, b, mutation = all_1x1.crossover(one_conv, random.Random(0), tiny)
    assert (a, b, mutation.name) == (all_1x1, one_conv, "identity")


@settings(max_examples=100, deadline=None)
@given(a=cells, b=cells, seed=seeds)
def test_crossover_children_are_complementary_edge_by_edge(a, b, seed):
    x, y, mutation = a.crossover(b, random.Random(seed), SPACE)
    swapped = mutation.params["swapped_edges"]
    assert mutation.name == "crossover" and swapped == sorted(set(swapped))
    for e in range(len(EDGES)):
        assert {x.ops[e], y.ops[e]} == {a.ops[e], b.ops[e]}
        assert (x.ops[e], y.ops[e]) == ((b.ops[e], a.ops[e]) if e in swapped else (a.ops[e], b.ops[e]))


def test_crossover_swaps_each_edge_half_the_time_and_checks_the_partner():
    a, b = NB201(("none",) * 6), NB201(("skip_connect",) * 6)
    rng, draws = random.Random(5), 2_000
    counts = Counter(e for _ in range(draws) for e in a.crossover(b, rng, SPACE)[2].params["swapped_edges"])
    assert all(abs(counts[e] - draws / 2) < 4 * (draws / 4) ** 0.5 for e in range(6)), counts
    with pytest.raises(GenomeError, match=r"crossover: skeletons differ"):
        a.crossover(NB201(b.ops, channels=8), rng, SPACE)
    with pytest.raises(GenomeError, match=r"expected an nb201 partner"):
        a.crossover("gcnn", rng, SPACE)  # type: ignore[arg-type]


@settings(max_examples=10, deadline=None)
@given(seed=seeds, length=st.integers(0, 15))
def test_any_chain_of_mutations_round_trips_stays_in_bounds_and_runs(seed, length):
    shape = (1, 9, 9)
    space = SearchSpace(input_shape=shape, num_classes=3, max_params=20_000, options={"channels": 4, "cells": 1})
    rng = random.Random(seed)
    genome = NB201.initial(rng, space)
    for _ in range(length):
        genome, _ = genome.mutate(rng, space)
        assert space.admits(genome)
        assert NB201.from_json(json.loads(json.dumps(genome.to_json()))) == genome
        assert NB201.from_string(genome.to_string(), genome.channels, genome.cells) == genome
    module = genome.to_module(shape, 3)
    assert module_params(module) == genome.param_count(shape, 3)
    assert module(torch.randn(2, *shape)).shape == (2, 3)


# ---------------------------------------------------------------- the network


def test_the_published_parameter_counts():
    first, all_3x3 = NB201.from_string(FIRST_ROW), NB201(("nor_conv_3x3",) * 6)
    assert first.param_count((3, 32, 32), 10) == module_params(first.to_module((3, 32, 32), 10)) == 129_306
    assert all_3x3.param_count((3, 32, 32), 10) == module_params(all_3x3.to_module((3, 32, 32), 10)) == 1_531_546
    assert NB201(("none",) * 6).param_count((3, 32, 32), 10) == 73_306
    rng = random.Random(11)
    for i, ops in enumerate(rng.sample(list(all_cells()), 200)):
        genome = NB201(ops)
        assert genome.param_count((3, 32, 32), 10) == published_params(genome)
        if i < 3:  # a few built: the rest are the formula against the formula
            assert module_params(genome.to_module((3, 32, 32), 10)) == published_params(genome)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_flops_are_torchs_count(shape):
    for arch in (FIRST_ROW, EXAMPLE):
        genome = NB201.from_string(arch)
        assert genome.flops(shape, 10) == torch_flops(genome.to_module(shape, 10), shape)


def test_flops_and_params_at_odd_and_tiny_sizes_and_other_skeletons():
    genome = NB201.from_string(EXAMPLE, channels=4, cells=2)
    for shape in [(1, 7, 7), (2, 15, 17), (1, 1, 1), (3, 2, 3)]:
        module = genome.to_module(shape, 3)
        assert genome.flops(shape, 3) == torch_flops(module, shape), shape
        assert genome.param_count(shape, 3) == module_params(module)


@pytest.mark.parametrize("shape, classes", [((3, 32, 32), 10), ((1, 28, 28), 10), ((1, 7, 7), 3), ((1, 8, 8), 1)])
def test_forward_shapes(shape, classes):
    genome = NB201.from_string(EXAMPLE)
    module = genome.to_module(shape, classes)
    out = module(torch.randn(2, *shape))
    assert out.shape == (2, classes) and torch.isfinite(out).all()
    assert len(module.cells) == 3 * 5 + 2


def test_the_reduction_shortcut_agrees_with_the_convolution_on_odd_sides():
    from genomes.nb201.net import ResNetBasicblock

    block = ResNetBasicblock(2, 4).eval()
    for side in (1, 2, 7, 8, 31, 32):
        x = torch.randn(1, 2, side, side)
        assert block.downsample(x).shape == block.conv_b(block.conv_a(x)).shape == (1, 4, -(-side // 2), -(-side // 2))
    x = torch.arange(49.0).reshape(1, 1, 7, 7)
    assert block.downsample[0](x)[0, 0, -1, -1] == 48.0  # the edge window averages the pixel it covers


def test_none_edges_zero_and_a_dead_cell_is_reported():
    dead = NB201(("nor_conv_3x3", "nor_conv_3x3", "none", "none", "none", "none"))  # node 3 gets nothing
    assert dead.cell_depth() is None
    stats = dead.stats((3, 32, 32), 10)
    assert (stats["connected"], stats["cell_depth"], stats["convs"], stats["nones"]) == (0, 0, 2, 4)
    from genomes.nb201.net import Cell

    cell = Cell(dead.ops, 4)
    assert torch.equal(cell(torch.randn(1, 4, 5, 5)), torch.zeros(1, 4, 5, 5))


def test_stats_count_the_ops_and_the_deepest_path():
    genome = NB201.from_string(EXAMPLE)  # 0 -3x3-> 1 -pool-> 3, 0 -skip-> 2 -3x3-> 3, 0 -1x1-> 3: one conv deep
    assert genome.stats((3, 32, 32), 10) == {
        "convs": 3, "conv3x3": 2, "conv1x1": 1, "skips": 1, "pools": 1, "nones": 1, "connected": 1,
        "cell_depth": 1, "params": published_params(genome), "depth": 1 + 3 * 5 * 1 + 2 * 2,
    }
    chain = NB201(("nor_conv_3x3", "none", "nor_conv_1x1", "none", "none", "skip_connect"))  # 0 -> 1 -> 2 -> 3
    assert chain.cell_depth() == 2 and chain.stats((3, 32, 32), 10)["depth"] == 1 + 3 * 5 * 2 + 2 * 2
    assert NB201(("nor_conv_1x1",) * 6).cell_depth() == 3
    assert NB201(("skip_connect",) * 6).cell_depth() == 0


# ---------------------------------------------------------------- inheritance


def test_a_child_with_one_edge_changed_inherits_every_other_tensor():
    shape = (3, 16, 16)
    parent = NB201.from_string(EXAMPLE, channels=4, cells=2)
    parent_state = {k: v + 1.0 for k, v in parent.to_module(shape, 10).state_dict().items()}
    for edge, op, fresh_per_cell in [(0, "nor_conv_1x1", 3), (1, "nor_conv_3x3", 3), (5, "skip_connect", 0)]:
        child = parent.with_edge(edge, op)
        module = child.to_module(shape, 10)
        inheritance = child.inherit(module, parent_state, None)
        tensors = dict(module.named_parameters())
        fresh = [k for k in tensors if f".edges.{edge}." in k]
        assert len(fresh) == fresh_per_cell * 3 * child.cells  # conv, bn weight, bn bias in each of the 6 cells
        assert inheritance.tensors == inheritance.tensors_total - len(fresh)
        assert all(f".edges.{edge}.{op}." in k for k in fresh)
        for key, value in module.state_dict().items():
            if f".edges.{edge}." not in key:
                assert torch.equal(value, parent_state[key]), key


def test_state_dict_keys_name_cell_edge_and_op():
    keys = set(NB201.from_string(EXAMPLE, channels=4, cells=1).to_module((3, 8, 8), 10).state_dict())
    assert {"stem.0.weight", "cells.0.edges.0.nor_conv_3x3.conv.weight", "cells.0.edges.3.nor_conv_1x1.bn.bias",
            "cells.1.conv_a.conv.weight", "cells.1.downsample.1.weight", "cells.4.edges.5.nor_conv_3x3.conv.weight",
            "lastact.0.weight", "classifier.weight"} <= keys
    assert not any(".edges.1." in k or ".edges.2." in k or ".edges.4." in k for k in keys)  # skip, none, pool


# ---------------------------------------------------------------------------- a found cell in use


@pytest.mark.slow
def test_a_cell_trains_on_mnist_mini_then_goes_through_finalize_and_export(tmp_path):
    """The built-in trainer on an nb201 genome (1x28x28 input), finalize's stages and export-model."""
    import torch

    import evolve
    from genomes.exported import load_model

    store = tmp_path / "run"
    run = evolve.run(store=str(store), executor="local", genome="nb201", dataset="mnist-mini",
                     genome_options={"channels": 4, "cells": 1}, population=3, steps=3, workers=1, seed=2,
                     final_batches=4, train={"batches": 3, "batch_size": 16})
    table = run.individuals()
    assert len(table) == 6 and (table["status"] == "ok").all()
    assert ((table["val_accuracy"] >= 0) & (table["val_accuracy"] <= 1)).all()
    result = run.result(reference=False)
    assert 0 <= result["test_accuracy"] <= 1 and result["final"]["status"] == "ok"

    rows = {r["stage"]: r for r in run.finalize(batches=4, cycles=2, top=2, prune_batches=4)}
    assert {"retrain", "snapshots", "top", "distill"} <= set(rows)
    assert all(0 <= rows[s]["test_accuracy"] <= 1 for s in ("retrain", "snapshots", "top", "distill"))
    assert "prune" not in rows or rows["prune"].get("status") != "ok"
    assert run.check().ok

    manifest = run.export_model(str(tmp_path / "model"), "retrain")
    model = load_model(str(tmp_path / "model"))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert 0 <= manifest["test_accuracy"] <= 1
