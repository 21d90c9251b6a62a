"""The default search's settings, stores written before them, and what a user reads at the end of a run."""

from __future__ import annotations

import json

import pytest

from evolve.config import DEFAULT_GENOME_OPTIONS, RunConfig
from evolve.final.final_model import lineage_batches, summary
from evolve.runner.launch import load_run, open_run, run_in_process
from evolve.store.backend import Store
from evolve.store.keys import LENET_KEY, RUN_KEY, record_key_of_tested
from evolve.store.snapshot import Snapshot


def test_the_default_run_grows_dna_by_morphisms_with_a_cosine_schedule_and_shifts():
    config = RunConfig()
    assert config.genome_options == DEFAULT_GENOME_OPTIONS["dna"] and config.genome_options["morphisms"]
    assert (config.train.schedule, config.train.augment, config.train.nesterov) == ("cosine", "shift", True)
    assert not config.train.evaluate_test, "the test split is for the best only"
    assert RunConfig(genome="gcnn").genome_options == {}, "Genetic CNN keeps the paper's options"
    assert RunConfig(genome_options={}).genome_options == {}, "explicit options are kept, even empty ones"


def test_a_store_written_before_schedules_existed_resumes_with_its_old_training(tmp_path):
    store = Store.open(str(tmp_path / "old"), {}, create=True)
    old = {"store": str(tmp_path / "old"), "genome": "dna", "genome_options": {}, "population": 20, "steps": 40,
           "max_params": 1_000_000, "train": {"batches": 150, "batch_size": 50, "momentum": 0.9,
                                              "weight_decay": 1e-4, "learning_rate": 0.1, "eval_batch_size": 1000,
                                              "device": "auto", "inherit_weights": True}}
    store.create_json(RUN_KEY, {"schema": 1, "config": old, "created_at": 0.0,
                                "space": {"input_shape": [1, 28, 28], "num_classes": 10, "max_params": 1_000_000,
                                          "options": {}}})
    config, space = load_run(store)
    assert (config.train.schedule, config.train.augment, config.train.nesterov) == ("constant", "none", False)
    assert config.train.weight_decay == 1e-4 and config.train.evaluate_test and config.val_fraction == 0.1
    assert config.genome_options == {} and space.options == {}
    assert config.max_flops == 0 and space.max_flops == 0, "no FLOPs bound where none was set"
    assert (config.final_batches, config.final_from, config.final_data) == (0, "weights", "train")


def test_a_store_written_before_final_from_existed_keeps_training_its_best_on_from_its_weights(tmp_path):
    store = Store.open(str(tmp_path / "old"), {}, create=True)
    old = RunConfig(store=str(tmp_path / "old")).model_dump(exclude={"final_from", "final_data"})
    store.create_json(RUN_KEY, {"schema": 1, "config": old, "created_at": 0.0,
                                "space": {"input_shape": [1, 28, 28], "num_classes": 10, "max_params": 100_000,
                                          "options": {}}})
    config, _ = load_run(store)
    assert (config.final_batches, config.final_from, config.final_data) == (4000, "weights", "train")
    assert (RunConfig().final_from, RunConfig().final_data) == ("scratch", "train+val"), "what a new run does"


@pytest.mark.slow
def test_summary_tests_the_best_once_and_caches_the_lenet_reference(tmp_path):
    config = RunConfig(store=str(tmp_path / "run"), dataset="digits", population=3, steps=4, workers=1,
                       final_batches=20, train={"batches": 8, "batch_size": 32, "device": "cpu"})
    store, config, space = open_run(config, check_health=False)
    run_in_process(store, config, space)
    first = summary(store, config)
    assert 0.0 <= first["test_accuracy"] <= 1.0 and first["params"] > 0 and first["compute_seconds"] > 0
    assert first["lineage_batches"] % 8 == 0 and first["lineage_batches"] >= 8
    lenet = first["lenet5"]
    assert lenet["model"] == "lenet5-bn" and lenet["batches"] == 1500 and 0.5 < lenet["test_accuracy"] <= 1.0
    kept = json.loads((tmp_path / "run" / LENET_KEY).read_text())
    assert kept["created_at"] == lenet["created_at"]
    assert (tmp_path / "run" / record_key_of_tested(first["step"])).exists()
    final = first["final"]
    assert final["step"] == first["step"] and final["batches"] == 20 and 0.0 <= final["test_accuracy"] <= 1.0
    assert (final["from"], final["data"], final["schedule"]) == ("scratch", "train+val", "one-cycle")
    assert final["val_accuracy"] is None, "validation was trained on: no validation figure"
    assert (tmp_path / "run" / final["weights"]["key"]).exists()
    again = summary(store, config)
    assert again["final"]["created_at"] == final["created_at"], "the final training is done once"
    assert again["lenet5"]["created_at"] == lenet["created_at"], "the reference is computed once per store"
    assert again["test_accuracy"] == first["test_accuracy"]
    snap = Snapshot.read(store)
    best = snap.best()
    assert lineage_batches(snap, best["step"]) == first["lineage_batches"]


def test_lenet_recipe_follows_the_runs_augmentation_or_the_datas_usual_one():
    from evolve.config import TrainConfig
    from evolve.training.lenet import RECIPE, recipe_for

    assert (recipe_for(TrainConfig(augment="shift", shift=3), 1).augment, recipe_for(TrainConfig(shift=3), 1).shift) \
        == ("shift", 3)
    assert recipe_for(TrainConfig(augment="affine"), 1).augment == "affine"
    plain = TrainConfig(augment="none")
    assert (recipe_for(plain, 1).augment, recipe_for(plain, 1).shift) == ("shift", 2)
    assert (recipe_for(plain, 3).augment, recipe_for(plain, 3).shift) == ("crop-flip", 4), "CIFAR: pad 4, flip"
    tuned = recipe_for(plain, 3, batches=99, device="cuda")
    assert (tuned.batches, tuned.device, tuned.learning_rate, tuned.schedule) == (99, "cuda", RECIPE.learning_rate,
                                                                                   "one-cycle")


def _weights_of(store, final):
    from evolve.training.train import weights_from_bytes

    return weights_from_bytes(store.read_bytes(final["weights"]["key"]))


@pytest.mark.slow
def test_the_final_model_starts_from_scratch_or_from_the_bests_weights_as_configured(tmp_path):
    """From scratch, the best's weights play no part (the same seed gives the same model); from the
    weights, they are where training starts. On the training split alone, validation is measured."""
    import torch
    from safetensors.torch import save

    from evolve.final.final_model import final_model, final_splits, run_data
    from evolve.training.train import weights_from_bytes

    config = RunConfig(store=str(tmp_path / "run"), dataset="digits", population=3, steps=2, workers=1,
                       final_batches=15, train={"batches": 5, "batch_size": 32, "device": "cpu"})
    store, config, space = open_run(config, check_health=False)
    run_in_process(store, config, space)
    best = Snapshot.read(store).best()
    data = run_data(config)
    assert final_splits(config, data).x_train.shape[0] == data.x_train.shape[0] + data.x_val.shape[0]
    trained = weights_from_bytes(store.read_bytes(best["weights"]["key"]))

    def final_of(name, weights, run):
        """The final model of ``best`` with ``weights`` as its stored weights, in a store of its own."""
        other = Store.open(str(tmp_path / name), {}, create=True)
        other.create_blob("weights/best.safetensors", save(weights))
        final = final_model(other, run, dict(best, weights={"key": "weights/best.safetensors"}), data)
        return final, _weights_of(other, final)

    zeros = {k: torch.zeros_like(v) for k, v in trained.items()}
    (scratch, a), (_, b) = final_of("s1", trained, config), final_of("s2", zeros, config)
    assert (scratch["from"], scratch["data"], scratch["val_accuracy"]) == ("scratch", "train+val", None)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "from scratch, the best's weights play no part"

    on = config.model_copy(update={"final_from": "weights", "final_data": "train"})
    (warm, a), (_, b) = final_of("w1", trained, on), final_of("w2", zeros, on)
    assert (warm["from"], warm["data"], warm["schedule"]) == ("weights", "train", "cosine")
    assert warm["val_accuracy"] is not None and 0.0 <= warm["val_accuracy"] <= 1.0
    assert not all(torch.equal(a[k], b[k]) for k in a), "from the weights, training starts from them"
