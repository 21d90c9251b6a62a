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

from bench import gpu, quality, space
from evolve.training.datasets import load_dataset
from evolve.training.train import build_module, to_device
from genomes import DNA


def test_verdict_needs_the_paired_difference_clear_of_zero():
    assert ": wins;" in quality._paired("x", {0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.1, 1: 0.2, 2: 0.2})
    assert "does NOT clearly win" in quality._paired("x", {0: 0.9, 1: 0.1, 2: 0.5}, {0: 0.1, 1: 0.3, 2: 0.4})
    assert "does NOT win (worse)" in quality._paired("x", {0: 0.1, 1: 0.2, 2: 0.2}, {0: 0.5, 1: 0.6, 2: 0.7})


def test_random_genome_is_a_bounded_walk_from_the_initial_individual():
    space = quality._space(quality.Settings(), 0)
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


def test_random_sampling_gets_the_same_batches_as_evolution():
    s = quality.Settings()
    assert s.samples * s.random_batches == s.evaluations * s.batches


@pytest.mark.slow
def test_quality_smoke(tmp_path, capsys):
    out = tmp_path / "quality.json"
    assert quality.main(["--smoke", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("| tournament |", "| aging |", "| random |", "| LeNet-5 (recipe", "best initial, trained as long",
                   "(a) tournament vs random", "(b) aging vs random", "(b) tournament retrained vs LeNet-5",
                   "(a+) aging vs random", "(a+) tournament final model vs LeNet-5"):
        assert needle in text
    result = json.loads(out.read_text())
    s = quality.Settings(**quality.SMOKE)
    searches = result["searches"]
    assert sorted((r["method"], r["seed"]) for r in searches) == sorted(
        (m, seed) for m in quality.METHODS for seed in range(s.seeds))
    for r in searches:
        assert r["evaluations"] == (s.population + s.steps if r["method"] in quality.EVOLUTION else s.samples), r
        assert 0.0 <= r["best_val"] <= 1.0 and 0.0 <= r["best_test"] <= 1.0
        assert 0.0 < r["final_test"] <= 1.0 and r["final_val"] == 0.0, "every best gets the final training (on train+val)"
        assert 0 <= r["depth"] <= (s.steps if r["method"] in quality.EVOLUTION else s.walk_limit)
        if r["method"] in quality.EVOLUTION:
            assert r["batches"] == s.evaluations * s.batches
            assert s.batches <= r["lineage_batches"] <= (r["depth"] + 1) * s.batches
    lineage = {(r["method"], r["seed"]): r["lineage_batches"] for r in searches}
    kinds = sorted(r["kind"].split("/")[0] for r in result["long"])
    assert kinds == ["initial-long"] * 2 * s.seeds + ["retrained"] * 3 * s.seeds
    for r in result["long"]:
        kind, method = r["kind"].split("/")
        expected = lineage[(method, r["seed"])] if kind == "initial-long" else s.retrain_batches
        assert r["batches"] == expected, r
    assert len(result["lenet"]) == s.seeds
    assert all(len(r["tests"]) == s.retrains for r in result["lenet"])
    retrained = [r for r in result["long"] if r["kind"].startswith("retrained/")]
    assert all(len(r["tests"]) == s.retrains and r["test"] == pytest.approx(sum(r["tests"]) / s.retrains)
               for r in retrained)
    assert quality.main(["--from-json", str(out)]) == 0
    assert capsys.readouterr().out == text, "a saved run re-renders to the same tables"


def test_space_smoke_trains_random_architectures_alike(tmp_path, capsys):
    out = tmp_path / "space.json"
    assert space.main(["--smoke", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert sorted(r["sample"] for r in rows) == [0, 1, 2]
    assert all(r["batches"] == 5 and 0 <= r["walk"] <= 28 and r["params"] > 0 for r in rows)
    assert "| n = 1 |" in text and "| n = 5 |" not in text, "best-of-n only for n the samples cover"
    top = [r["test"] for r in rows if r["val"] == max(r["val"] for r in rows)]
    mean = sum(r["test"] for r in rows) / 3
    assert min(top) - 1e-9 <= space.expected_best(rows, 3, random.Random(0)) <= max(top) + 1e-9
    assert space.expected_best(rows, 1, random.Random(0)) == pytest.approx(mean, abs=0.05)


def test_gpu_bench_trains_the_same_module_as_the_engine():
    s = gpu.Settings(**{**gpu.SMOKE, "device": "cpu"})
    data = to_device(load_dataset("mnist-mini", seed=0), "cpu")
    ours = gpu.fresh_module(s, data, torch.device("cpu"), seed=7, channels_last=False)
    engines = build_module(gpu.conv_stack(s.layers, s.channels), data.input_shape, data.num_classes, 7)
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


def test_retrain_trains_the_best_architecture_from_scratch_with_the_recipe(tmp_path):
    from bench import retrain
    from evolve.config import build_config
    from evolve.runner.launch import open_run, run_in_process
    from evolve.store.backend import Store
    from evolve.store.snapshot import Snapshot

    config = build_config({"store": str(tmp_path / "run"), "dataset": "digits", "population": 2, "steps": 2,
                           "workers": 1, "final_batches": 0, "train": {"batches": 3, "device": "cpu"}})
    store, config, space = open_run(config, check_health=False)
    run_in_process(store, config, space)
    best = Snapshot.read(Store.open(str(tmp_path / "run"))).best()
    first = retrain.retrain(str(tmp_path / "run"), batches=40)
    assert first["step"] == best["step"] and first["batches"] == 40 and first["status"] == "ok"
    assert 0.0 < first["test_accuracy"] <= 1.0 and 0.0 < first["val_accuracy"] <= 1.0
    assert retrain.retrain(str(tmp_path / "run"), step=0, batches=40)["step"] == 0
    again = retrain.retrain(str(tmp_path / "run"), batches=40)
    assert (again["val_accuracy"], again["test_accuracy"]) == (first["val_accuracy"], first["test_accuracy"])
    with pytest.raises(SystemExit, match="--step: no individual 99"):
        retrain.retrain(str(tmp_path / "run"), step=99, batches=1)


def test_baselines_are_reused_only_from_a_run_with_the_same_settings(tmp_path):
    from dataclasses import asdict, replace

    s = quality.Settings(**quality.SMOKE)
    saved = {"settings": asdict(s), "lenet": [{"method": "lenet", "seed": 0}],
             "searches": [{"method": "random", "seed": 0}, {"method": "aging", "seed": 0}],
             "long": [{"kind": "retrained/random", "seed": 0}, {"kind": "retrained/aging", "seed": 0}]}
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    got = quality.cached_baselines(replace(s, inherit=False), path)  # evolution's own settings may differ
    assert got == {"searches": [{"method": "random", "seed": 0}], "lenet": [{"method": "lenet", "seed": 0}],
                   "long": [{"kind": "retrained/random", "seed": 0}]}
    with pytest.raises(SystemExit, match="random_batches=7"):
        quality.cached_baselines(replace(s, random_batches=8), path)
