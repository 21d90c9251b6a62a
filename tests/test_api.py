"""The Python API (evolve.api), used as a notebook would: no CLI call anywhere."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

import evolve
from evolve.config import ConfigError
from evolve.store.backend import StoreError
from evolve.store.records import Individual

STORES = Path(__file__).parent / "stores" / "0.1.0"
TINY = {"dataset": "digits", "population": 4, "steps": 8, "workers": 2, "seed": 1, "final_batches": 6,
        "train": {"batches": 4}}


def test_a_notebook_starts_a_run_watches_it_reads_it_and_evaluates_the_best(tmp_path):
    import torch

    from evolve.training.datasets import load_dataset

    seen: list[int] = []
    run = evolve.run(store=str(tmp_path / "run"), executor="local", wait=False, on_progress=seen.append, **TINY)
    watcher = evolve.open(str(tmp_path / "run"))  # another handle, read-only, while it runs
    assert watcher.config.population == 4 and watcher.total == 12
    while run.running:
        assert 0 <= watcher.status()["done"] <= 12
        time.sleep(0.05)
    run.wait()
    assert seen and seen[-1] == 12

    status = watcher.status()
    assert (status["done"], status["total"], status["live"]) == (12, 12, 4)
    table = watcher.individuals()
    assert len(table) == 12 and list(table["step"]) == list(range(12))
    assert table["alive"].sum() == 4 and set(table.columns) >= {"fitness", "params", "mutation", "genome"}

    best = watcher.best()
    assert isinstance(best, Individual) and best.fitness == table["fitness"].max()
    chain = watcher.lineage()
    assert chain[-1].step == best.step and chain[0].parent is None
    assert all(child.parent == parent.step for parent, child in zip(chain, chain[1:]))

    net = watcher.model(best.step)
    assert isinstance(net, torch.nn.Module) and not net.training
    data = load_dataset("digits", seed=1, val_fraction=watcher.config.val_fraction)
    with torch.no_grad():
        predicted = net(torch.as_tensor(data.x_val)).argmax(1).numpy()
    assert (predicted == data.y_val).mean() == pytest.approx(best.val_accuracy, abs=1e-6)

    result = watcher.result(reference=False)
    assert result["step"] == best.step and 0.0 <= result["test_accuracy"] <= 1.0
    assert result["final"]["status"] == "ok"
    assert watcher.plot(str(tmp_path / "run.png")).individuals == 12


def test_resume_extends_a_run_and_stop_leaves_it_resumable(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(STORES / "gcnn-synthetic", store)
    run = evolve.resume(str(store), executor="local", steps=40, wait=False)
    time.sleep(0.3)
    run.stop()
    assert not run.running
    done = evolve.open(str(store)).status()["done"]
    assert 12 <= done <= 44
    evolve.resume(str(store), executor="local")
    assert evolve.open(str(store)).status()["done"] == 44


def test_errors_name_the_field_or_store(tmp_path):
    with pytest.raises(ConfigError, match="population"):
        evolve.run(store=str(tmp_path / "bad"), population=0, executor="local")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="executor"):
        evolve.run(store=str(tmp_path / "x"), fitness="synthetic", executor="threads", steps=2, population=2)
    with pytest.raises(StoreError, match="run.json"):
        evolve.open(str(tmp_path))
    run = evolve.open(str(STORES / "gcnn-synthetic"))
    with pytest.raises(StoreError, match="individual 3: it has no stored weights"):
        run.model(3)
    with pytest.raises(StoreError, match="individual 99 does not exist"):
        run.lineage(99)
    assert json.loads(json.dumps(run.status()))["done"] == 12
    trained = evolve.open(str(STORES / "dna-digits"))  # keep = 'needed': most weights were deleted as it ran
    refused = []
    for step in range(14):
        try:
            trained.model(step)
        except StoreError as exc:
            refused.append(str(exc))
    assert len(refused) == 14 - 5 and all("individual " in m and "its weights were deleted" in m for m in refused)
    assert trained.check().ok and trained.model().training is False


@pytest.mark.slow
def test_a_ray_run_started_without_waiting_is_watched_and_stopped(tmp_path):
    import ray

    store = str(tmp_path / "run")
    try:
        run = evolve.run(store=store, fitness="synthetic", synthetic_seconds=0.05, population=4, steps=400, workers=2,
                         executor="ray", wait=False)
        while evolve.open(store).status()["done"] < 8:
            assert run.running
            time.sleep(0.1)
        run.stop()
    finally:
        ray.shutdown()
    assert not run.running
    status = evolve.open(store).status()
    assert 8 <= status["done"] < 404 and evolve.open(store).check().ok
    assert {w.split("-")[0] for w in status["workers"]} == {"ray"}
