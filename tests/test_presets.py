"""Paper presets: `evolve run --preset NAME --dry-run` shows each paper's settings; nothing trains here."""

from __future__ import annotations

import copy
import json
import math

import pytest
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.config import RunConfig, build_config
from evolve.runner.presets import PRESETS, missing_dataset, resolve, train_images
from evolve.training.datasets import load_dataset

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"evolve {' '.join(map(str, args))} raised {result.exception!r}")
    return result


def dry_run(*args) -> dict:
    result = invoke("run", "--dry-run", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result, *names: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


def contains(actual: dict, expected: dict, path: str = "") -> None:
    for key, value in expected.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            contains(actual[key], value, f"{where}.")
        else:
            assert actual[key] == value, f"{where}: {actual[key]!r} != {value!r}"


LSE_TRAIN = {"batches": 25_600, "batch_size": 50, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
             "schedule": "constant", "augment": "crop-flip", "shift": 4, "inherit_weights": True}
PAPER = {
    "lse-cifar10": {"genome": "dna", "genome_options": {}, "selection": "tournament", "population": 1_000,
                    "workers": 250, "val_fraction": 0.1, "dataset": "REQUIRED: --dataset cifar10:PATH",
                    "train": LSE_TRAIN},
    "lse-cifar100": {"genome": "dna", "genome_options": {}, "selection": "tournament", "population": 1_000,
                     "workers": 250, "dataset": "REQUIRED: --dataset cifar100:PATH", "train": LSE_TRAIN},
    "gcnn-mnist": {"genome": "gcnn", "selection": "generational", "population": 20, "steps": 1_000,
                   "p_m": 0.8, "p_c": 0.2, "dataset": "mnist-mini",
                   "genome_options": {"nodes": [3, 5], "channels": [20, 50], "q_m": 0.1, "q_c": 0.3},
                   "train": {"learning_rate": 1e-3, "schedule": "staged", "inherit_weights": False,
                             "stages": [[0.0, 1.0], [0.8, 0.1], [0.96, 0.01]]}},
    "gcnn-cifar10": {"genome": "gcnn", "selection": "generational", "population": 20, "steps": 1_000,
                     "p_m": 0.8, "p_c": 0.2, "dataset": "REQUIRED: --dataset cifar10:PATH",
                     "genome_options": {"nodes": [3, 4, 5], "channels": [8, 16, 32], "q_m": 0.05, "q_c": 0.2},
                     "train": {"learning_rate": 1e-2, "schedule": "staged", "inherit_weights": False}},
    "nb201-cifar10": {"genome": "nb201", "fitness": "table:nb201-cifar10", "selection": "aging", "population": 30,
                      "sample_size": 10, "steps": 120, "workers": 4, "max_params": 2_000_000},
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_dry_run_shows_the_papers_settings(name, tmp_path):
    store = tmp_path / "store"
    shown = dry_run("--preset", name, "--store", store)
    contains(shown, PAPER[name])
    assert "storage_options" not in shown
    assert not store.exists()  # a dry run creates nothing
    preset = PRESETS[name]
    assert preset.doc and preset.figure, "every paper preset says what it reproduces"


def test_every_preset_is_listed_and_demo_is_the_plain_defaults():
    assert set(PRESETS) == {"demo", "lse-cifar10", "lse-cifar100", "gcnn-mnist", "gcnn-cifar10", "nb201-cifar10"}
    assert dry_run("--preset", "demo") == dry_run()
    assert PRESETS["demo"].settings == {}


def test_lse_is_the_papers_dna_and_its_cap_does_not_truncate():
    from genomes import SearchSpace
    from genomes.dna.mutations import dna_options

    options = dna_options(SearchSpace(options={}))  # the LSE presets leave genome_options empty
    assert (options.initial_convs, options.morphisms, options.initial_lr, dict(options.mutation_weights)) == \
        (0, False, 0.1, {})  # trivial start, uniform mutations, learning rate 0.1 in the DNA
    for name in ("lse-cifar10", "lse-cifar100"):
        cap = dry_run("--preset", name)["max_params"]
        assert cap >= 100 * 5_400_000 > RunConfig().max_params  # the best CIFAR-10 net had 5.4M parameters


def test_epoch_budgets_follow_the_training_split_actually_used(tmp_path):
    mini = dry_run("--preset", "gcnn-mnist")
    split = train_images(build_config({"dataset": "mnist-mini", "val_fraction": mini["val_fraction"]}))
    assert mini["train"]["batches"] == math.ceil(25 * split / mini["train"]["batch_size"])
    full = dry_run("--preset", "gcnn-mnist", "--dataset", "mnist:/data/mnist")  # the paper's full MNIST
    assert full["train"]["batches"] == math.ceil(25 * train_images(build_config({"dataset": "mnist:x", "val_fraction": full["val_fraction"]})) / 32)
    assert full["train"]["batches"] > 10 * mini["train"]["batches"]
    cifar = dry_run("--preset", "gcnn-cifar10", "--dataset", "cifar10:/data/c10")
    assert cifar["dataset"] == "cifar10:/data/c10"
    assert cifar["train"]["batches"] == math.ceil(240 * train_images(build_config({"dataset": "cifar10:x", "val_fraction": cifar["val_fraction"]})) / 32)
    config = tmp_path / "c.toml"
    config.write_text('[train]\nbatches = 77\n')  # a budget the user states wins
    assert dry_run("--preset", "gcnn-mnist", "--config", config)["train"]["batches"] == 77
    config.write_text('[train]\nbatch_size = 64\n')  # a batch size the user states: same epochs
    shown = dry_run("--preset", "gcnn-mnist", "--config", config)
    assert shown["train"]["batches"] == math.ceil(25 * split / 64)


@pytest.mark.parametrize("spec", ["mnist-mini", "digits"])
@pytest.mark.parametrize("val_fraction", [0.1, 0.2])
def test_known_training_split_sizes_match_the_loader(spec, val_fraction):
    assert train_images(build_config({"dataset": spec, "val_fraction": val_fraction})) == load_dataset(spec, val_fraction=val_fraction).sizes()["train"]


def test_precedence_defaults_preset_file_options(tmp_path):
    # an explicit option beats the preset
    shown = dry_run("--preset", "gcnn-mnist", "--population", "10", "--steps", "30", "--dataset", "digits")
    assert (shown["population"], shown["steps"], shown["dataset"]) == (10, 30, "digits")
    assert shown["genome_options"]["q_m"] == 0.1 and shown["p_m"] == 0.8  # the rest stays the preset's
    # the config file beats the preset, key by key inside train and genome_options
    config = tmp_path / "run.toml"
    config.write_text('population = 10\nsteps = 50\n'
                      '[train]\nweight_decay = 0.0\n[genome_options]\nq_m = 0.2\n')
    shown = dry_run("--preset", "gcnn-mnist", "--config", config)
    assert (shown["population"], shown["steps"], shown["train"]["weight_decay"]) == (10, 50, 0.0)
    assert shown["train"]["schedule"] == "staged" and shown["genome_options"] == {
        "nodes": [3, 5], "channels": [20, 50], "q_m": 0.2, "q_c": 0.3}
    # an option beats the config file
    shown = dry_run("--preset", "gcnn-mnist", "--config", config, "--population", "5", "--steps", "5")
    assert shown["population"] == 5
    # the config file may name the preset; --preset beats it
    config.write_text('preset = "lse-cifar10"\npopulation = 50\n')
    shown = dry_run("--config", config, "--dataset", "cifar10:/d")
    assert (shown["genome"], shown["population"], shown["train"]["batches"]) == ("dna", 50, 25_600)
    assert dry_run("--config", config, "--preset", "demo")["train"] == RunConfig().model_dump()["train"]
    # another genome kind drops the preset's genome options: that kind's defaults apply
    shown = dry_run("--preset", "gcnn-mnist", "--genome", "dna", "--selection", "tournament")
    assert shown["genome"] == "dna" and shown["genome_options"] == RunConfig(genome="dna").genome_options


def test_unknown_preset_is_one_line_listing_the_known(tmp_path):
    result = invoke("run", "--preset", "lse-imagenet", "--store", tmp_path / "s")
    line = one_line_error(result, "--preset", "lse-imagenet")
    assert all(name in line for name in PRESETS)
    config = tmp_path / "run.toml"
    config.write_text('preset = "gcnn-minst"\n')
    one_line_error(invoke("run", "--config", config, "--dry-run"), "gcnn-minst", "run.toml", "gcnn-mnist")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("name,hint", [("lse-cifar10", "cifar10:PATH"), ("lse-cifar100", "cifar100:PATH"),
                                       ("gcnn-cifar10", "cifar10:PATH")])
def test_a_preset_without_its_data_says_dataset_and_creates_nothing(name, hint, tmp_path):
    store = tmp_path / "store"
    result = invoke("run", "--preset", name, "--store", store, "--executor", "local")
    one_line_error(result, "--dataset", hint)
    assert not store.exists()
    result = invoke("run", "--preset", name, "--store", store, "--dry-run")
    assert result.exit_code == 0 and "--dataset" in result.stderr and not store.exists()
    assert missing_dataset(name, "cifar10:/somewhere") is None


def test_resolve_is_plain_data_and_builds():
    for name, preset in PRESETS.items():
        before = copy.deepcopy(preset.settings)
        settings = resolve(name, {"train": {"batch_size": 7}}, {"dataset": "cifar10:/x"} if preset.dataset_hint else {})
        json.dumps(settings)  # plain data
        build_config(settings, name)
        assert PRESETS[name].settings == before  # resolving never changes the preset
