"""Genomes of your own (``genome = "package.module:Class"``): the protocol's checks catch a class broken in each
way, one per check, by name; the MLP example runs end to end, locally and on Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import evolve
from evolve.cli import app
from evolve.config import ConfigError, build_config
from genomes import SearchSpace
from genomes.checks import check_genome

ROOT = Path(__file__).resolve().parent.parent
SPACE = SearchSpace(input_shape=(1, 8, 8), num_classes=10, max_params=20_000)
RUN = {"genome": "examples.mlp_space:MLPSpace", "fitness": "examples.mlp_space:fitness", "input_shape": (1, 8, 8),
       "num_classes": 10, "max_params": 20_000}


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # examples.mlp_space, as a user's installed module would be
    monkeypatch.syspath_prepend(str(ROOT / "tests"))  # genome_faults


def failures(kind: str) -> dict[str, str]:
    return {f"{c.name} ({c.method})": c.detail for c in check_genome(kind, SPACE) if not c.ok}


def test_the_example_keeps_the_protocol():
    results = check_genome("examples.mlp_space:MLPSpace", SPACE)
    assert all(c.ok for c in results), [c for c in results if not c.ok]
    assert {c.name for c in results} == {"import", "random draws", "JSON round trip", "mutations", "output shape",
                                         "param_count"}


@pytest.mark.parametrize(("kind", "check", "fragment"), [
    ("genome_faults:WrongKind", "import (kind)", "its kind must be the name it is imported by"),
    ("genome_faults:Missing", "import (kind)", "no class 'Missing'"),
    ("genome_faults:OverBounds", "random draws (initial)", "over max_params 20,000"),
    ("genome_faults:LosesDropout", "JSON round trip (to_json/from_json)", "differs"),
    ("genome_faults:StillParent", "mutations (mutate)", "'resize' returned its parent unchanged"),
    ("genome_faults:WrongOutputs", "output shape (to_module)", "expected (2, 10)"),
    ("genome_faults:MiscountedParams", "param_count (param_count)", "the module has"),
    ("genome_faults:BadCrossover", "crossover (crossover)", "over max_params"),
])
def test_each_check_catches_its_broken_class_by_name(kind, check, fragment):
    failed = failures(kind)
    assert list(failed) == [check], failed
    assert fragment in failed[check]
    result = CliRunner().invoke(app, ["doctor", "--genome", kind, "--input-shape", "1,8,8", "--max-params", "20000"])
    assert result.exit_code == 1
    assert f"FAIL {check}" in result.output and "1 of" in result.output.splitlines()[-1]


def test_a_fixed_network_without_genes_is_told_to_declare_some():
    result = CliRunner().invoke(app, ["doctor", "--genome", "fixed"])
    assert result.exit_code == 1
    assert "declares no genes to search: add some, e.g. --hparam" in result.output
    result = CliRunner().invoke(app, ["doctor", "--genome", "fixed", "--hparam", "learning_rate=log:1e-3..0.3"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "genome fixed: all 8 checks passed"


def test_a_broken_class_is_refused_by_the_config_in_one_line():
    with pytest.raises(ConfigError, match="genome: genome 'genome_faults:WrongKind': its kind must be"):
        build_config({**RUN, "genome": "genome_faults:WrongKind"})
    with pytest.raises(ConfigError, match="'genome_faults:NoSample' has no sample"):
        build_config({**RUN, "genome": "genome_faults:NoSample", "selection": "random"})
    build_config({**RUN, "selection": "random"})


def test_the_mlp_example_runs_end_to_end_locally(tmp_path):
    run = evolve.run(store=str(tmp_path / "run"), population=4, steps=6, workers=2, executor="local", **RUN)
    status = run.status()
    assert status["done"] == 10 and status["failed"] == 0
    best = run.best()
    assert best.fitness > 0.5 and best.genome["kind"] == "examples.mlp_space:MLPSpace"
    assert CliRunner().invoke(app, ["check", str(tmp_path / "run")]).exit_code == 0
    assert CliRunner().invoke(app, ["lineage", str(tmp_path / "run")]).exit_code == 0


def test_the_mlp_example_runs_on_ray(tmp_path, monkeypatch):
    """Ray's workers import the class and the fitness by name (PYTHONPATH: what installing the module gives)."""
    import ray

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if ray.is_initialized():
        ray.shutdown()
    try:
        run = evolve.run(store=str(tmp_path / "run"), population=4, steps=4, workers=2, executor="ray", **RUN)
    finally:
        ray.shutdown()
    assert run.status()["done"] == 8 and run.status()["failed"] == 0
    frame = run.individuals()
    assert frame["worker"].str.startswith("ray-").all(), frame["worker"].tolist()
