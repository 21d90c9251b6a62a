"""The quality and GPU-throughput benchmarks (bench/quality.py, bench/gpu.py) in their smoke modes.

The figures of a smoke run mean nothing; these tests check that the pipelines run end to end on
the real engine and that what they report is consistent (budgets, lineage budgets, ratios).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import gpu, quality
from evolve.config import TrainConfig
from evolve.data import load_dataset, to_device
from evolve.train import Trainer
from genomes import DNA, SearchSpace


def test_inheritance_chain_stops_at_the_first_fresh_start():
    ancestry = [{"metrics": {"inherited": 0.0}}, {"metrics": {"inherited": 1.0}},
                {"metrics": {"inherited": 0.0}}, {"metrics": {"inherited": 0.4}}]
    assert quality.inheritance_chain(ancestry) == 2
    assert quality.inheritance_chain(ancestry[:2]) == 2
    assert quality.inheritance_chain(ancestry[:1]) == 1


def test_verdict_needs_the_paired_difference_clear_of_zero():
    assert ": wins;" in quality._paired("x", {0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.1, 1: 0.2, 2: 0.2})
    assert "does NOT clearly win" in quality._paired("x", {0: 0.9, 1: 0.1, 2: 0.5}, {0: 0.1, 1: 0.3, 2: 0.4})
    assert "does NOT win (worse)" in quality._paired("x", {0: 0.1, 1: 0.2, 2: 0.2}, {0: 0.5, 1: 0.6, 2: 0.7})


def test_random_genome_is_a_bounded_walk_from_the_initial_individual():
    space = SearchSpace(input_shape=(1, 28, 28), num_classes=10, max_params=50_000)
    initial = DNA.initial(random.Random(0), space)
    assert quality.random_genome("dna", random.Random(1), space, 0) == (initial, 0)
    sizes, walks = set(), set()
    for seed in range(40):
        genome, walk = quality.random_genome("dna", random.Random(seed), space, 12)
        assert genome.param_count(space.input_shape, space.num_classes) <= space.max_params
        sizes.add(len(genome.vertices))
        walks.add(walk)
    assert walks <= set(range(13)) and len(walks) > 5
    assert len(sizes) > 2, "a walk of up to 12 mutations should reach networks of several depths"


def test_lenet_is_caffes_lenet_and_trains_through_the_engine_trainer():
    data = to_device(load_dataset("mnist-mini", seed=0), "cpu")
    model = quality.LeNet(0.03)
    assert model.param_count((1, 28, 28), 10) == 431_080  # 520 + 25,050 + 400,500 + 5,010
    trainer = Trainer(data, TrainConfig(batches=30, device="cpu"), torch.device("cpu"), 1_000_000)
    outcome = trainer.train(model, None, seed=0)
    assert outcome.status == "ok"
    assert outcome.val_accuracy > 0.5, "30 SGD steps of LeNet on MNIST digits are far above chance (0.1)"


@pytest.mark.slow
def test_quality_smoke(tmp_path, capsys):
    out = tmp_path / "quality.json"
    assert quality.main(["--smoke", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("| tournament |", "| aging |", "| random |", "LeNet (a)", "retrained from scratch",
                   "tournament vs random", "aging vs random"):
        assert needle in text
    result = json.loads(out.read_text())
    s = quality.Settings(**quality.SMOKE)
    searches = result["searches"]
    assert sorted((r["method"], r["seed"]) for r in searches) == sorted(
        (m, seed) for m in quality.METHODS for seed in range(s.seeds))
    for r in searches:
        assert r["evaluations"] == s.population + s.steps, r
        assert 0.0 <= r["best_val"] <= 1.0 and 0.0 <= r["best_test"] <= 1.0
        assert 0 <= r["depth"] <= (s.steps if r["method"] in quality.EVOLUTION else s.walk_limit)
        assert 1 <= r["chain"] <= r["depth"] + 1
    chains = {(r["method"], r["seed"]): r["chain"] for r in searches}
    longs = result["long"]
    assert len(longs) == 2 * len(quality.EVOLUTION) * s.seeds
    for r in longs:
        method = r["kind"].split("/")[1]
        assert r["batches"] == chains[(method, r["seed"])] * s.batches, r
    assert len(result["lenet"]) == s.seeds and all(r["lr"] in s.lenet_lrs for r in result["lenet"])
    assert quality.main(["--from-json", str(out)]) == 0
    assert capsys.readouterr().out == text, "a saved run re-renders to the same tables"


def test_gpu_bench_trains_the_same_module_as_the_engine():
    s = gpu.Settings(**{**gpu.SMOKE, "device": "cpu"})
    data = to_device(load_dataset("mnist-mini", seed=0), "cpu")
    ours = gpu.fresh_module(s, data, torch.device("cpu"), seed=7, channels_last=False)
    torch.manual_seed(7)  # what Trainer._train does before building the child
    engines = gpu.conv_stack(s.layers, s.channels).to_module(data.input_shape, data.num_classes)
    theirs = engines.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs[key]), key


@pytest.mark.slow
def test_gpu_smoke_on_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--smoke", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "engine loop / plain loop:" in text and "| engine | 2 |" in text
    result = json.loads(out.read_text())
    rows = {r["variant"].split(" (")[0]: r for r in result["rows"]}
    assert {"engine: Trainer loop", "engine: whole child", "plain loop"} <= set(rows)
    assert all(r["seconds"] and r["seconds"] > 0 for r in rows.values())
    engine = result["engine"]
    assert engine["child"] >= engine["loop"] + engine["eval"]
    shares = result["shares"]
    assert [(r["path"], r["workers"]) for r in shares] == [("engine", 1), ("engine", 2),
                                                           ("plain", 1), ("plain", 2)]
    for r in shares:
        assert "error" not in r, r
        assert r["images_per_s"] > 0 and r["seconds"] > 0
