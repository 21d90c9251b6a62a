"""Your own fitness (evolve.training.fitness): by name, in-process, failing, under Ray; the example end to end."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import evolve
from evolve.cli.main import app
from evolve.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"input_shape": (1, 16, 16), "num_classes": 1, "max_params": 30_000}


@pytest.fixture(autouse=True)
def importable_examples(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # examples.regression, as a user's installed module would be


def _val_mse(net: torch.nn.Module) -> float:
    from examples.regression import data

    _, _, x_val, y_val = data()
    with torch.no_grad():
        return F.mse_loss(net(x_val).squeeze(1), y_val).item()


def test_the_regression_example_evolves_and_its_best_model_is_what_was_measured(tmp_path):
    run = evolve.run(store=str(tmp_path / "run"), fitness="examples.regression:fitness", population=4, steps=6,
                     workers=2, executor="local", **SPACE)
    assert run.status()["done"] == 10 and run.status()["failed"] == 0
    best = run.best()
    extra = best.metrics.model_extra
    assert best.fitness == pytest.approx(-extra["val_mse"]) and 0 < extra["val_mse"] and extra["r2"] < 1
    assert _val_mse(run.model(best.step)) == pytest.approx(extra["val_mse"], rel=1e-5)  # the trained weights
    children = run.individuals().query("step >= 4")
    assert (children["inherited"] > 0).all(), "children start from their parent's weights"
    assert CliRunner().invoke(app, ["check", str(tmp_path / "run")]).exit_code == 0
    assert run.result(reference=False)["test_accuracy"] is None  # no test split: nothing invented


def failing(model, inherited, rng, context):
    """Raises on some steps, returns NaN on others, a proper fitness otherwise."""
    kind = context.seed % 3
    if kind == 0:
        raise ValueError("this child is broken")
    if kind == 1:
        return float("nan")
    return -float(sum(p.numel() for p in model.parameters())) / 1e5, {"val_accuracy": 0.5}


def test_a_fitness_that_raises_or_returns_nan_fails_the_child_not_the_worker(tmp_path):
    run = evolve.run(store=str(tmp_path / "run"), fitness=failing, population=6, steps=18, executor="local",
                     **SPACE)
    table = run.individuals()
    assert len(table) == 24
    failed, ok = table[table["status"] == "failed"], table[table["status"] == "ok"]
    assert len(failed) and len(ok)
    assert failed["reason"].str.contains("fitness raised ValueError: this child is broken").any()
    assert failed["reason"].str.contains("not a finite number").any()
    assert (failed["fitness"] == -math.inf).all() and ok["fitness"].map(math.isfinite).all()
    assert run.best().status == "ok" and run.best().val_accuracy == 0.5
    assert run.config.fitness.startswith("test_fitness:failing")


def test_an_in_process_function_without_a_name_runs_locally_and_resumes_only_from_python(tmp_path):
    counts = []

    def closure(model, inherited, rng, context):  # no importable name: test_fitness:...<locals>.closure
        counts.append(context.seed)
        return float(torch.rand((), generator=rng))

    store = str(tmp_path / "run")
    with pytest.raises(ConfigError, match="cannot import it"):
        evolve.run(store=store, fitness=closure, population=3, steps=3, executor="ray", **SPACE)
    assert not os.path.exists(store)
    run = evolve.run(store=store, fitness=closure, population=3, steps=3, executor="local", **SPACE)
    assert run.config.fitness.startswith("in-process:") and len(counts) == 6

    result = CliRunner().invoke(app, ["resume", store, "--executor", "local", "--steps", "5"])
    assert result.exit_code == 2 and "evolve.resume(url, fitness=" in result.stderr, result.output + result.stderr
    with pytest.raises(ConfigError, match="given in-process"):
        evolve.resume(store, executor="local", steps=5)
    evolve.resume(store, fitness=closure, executor="local", steps=5)
    assert evolve.open(store).status()["done"] == 8 and len(counts) == 8


def test_a_fitness_name_that_does_not_import_is_refused_before_anything_is_written(tmp_path):
    for name, why in [("no_such_module:f", "cannot import module 'no_such_module'"),
                      ("examples.regression:nothing", "has no 'nothing'"),
                      ("examples.regression:SHAPE", "not a function")]:
        with pytest.raises(ConfigError, match=why):
            evolve.run(store=str(tmp_path / "run"), fitness=name, executor="local", **SPACE)
        assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="input_shape, num_classes"):
        evolve.run(store=str(tmp_path / "run"), fitness="examples.regression:fitness", executor="local")
    with pytest.raises(ConfigError, match="takes them from the data"):
        evolve.configure(input_shape=(1, 16, 16), num_classes=1)
    with pytest.raises(ConfigError, match="input_shape"):
        evolve.configure(fitness="examples.regression:fitness", input_shape=(1, 0, 16), num_classes=1)


@pytest.mark.slow
def test_the_example_under_ray(tmp_path, monkeypatch):
    """Ray's workers import the fitness by name (PYTHONPATH: what installing the module would give)."""
    import ray

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if ray.is_initialized():
        ray.shutdown()
    try:
        run = evolve.run(store=str(tmp_path / "run"), fitness="examples.regression:fitness", population=4,
                         steps=4, workers=2, executor="ray", **SPACE)
    finally:
        ray.shutdown()
    assert run.status()["done"] == 8 and run.status()["failed"] == 0
    workers = set(run.individuals()["worker"])
    assert all(w.startswith("ray-") for w in workers), workers


def test_failed_children_never_stall_a_generational_run(tmp_path):
    """Genetic CNN's roulette draws in proportion to fitness: a -inf (failed) child gets no share."""
    run = evolve.run(store=str(tmp_path / "run"), genome="gcnn", selection="generational", fitness=failing,
                     population=4, steps=12, executor="local", input_shape=(1, 16, 16), num_classes=1)
    table = run.individuals()
    assert len(table) == 16 and (table["status"] == "failed").any() and (table["status"] == "ok").any()


def test_resume_refuses_another_function_than_the_recorded_one(tmp_path):
    store = str(tmp_path / "run")
    evolve.run(store=store, fitness=failing, population=3, steps=2, executor="local", **SPACE)
    with pytest.raises(ConfigError, match="records fitness 'test_fitness:failing'"):
        evolve.resume(store, fitness=lambda *a: 1.0, executor="local", steps=4)
    evolve.resume(store, fitness=failing, executor="local", steps=4)
    assert evolve.open(store).status()["done"] == 7
