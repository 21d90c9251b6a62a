"""The command line as scripts use it: --json shapes, --storage-options on every command, --set, choices."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from test_store import moto_endpoint, s3_options  # noqa: F401 - the session's moto server (a fixture)
from typer.testing import CliRunner

from evolve.cli.main import app

STORES = Path(__file__).parent / "stores" / "0.1.0"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def as_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    data = json.loads(result.stdout)
    assert data["format"] == 1 and data["command"] == args[0], data
    return data


@pytest.fixture
def digits_store(tmp_path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(STORES / "dna-digits", store)
    return store


def test_json_shapes(digits_store):
    import evolve

    run = evolve.open(str(digits_store))
    status = as_json("status", digits_store)
    assert (status["done"], status["total"], status["live"], status["in_flight"]) == (14, 14, 4, 0)
    assert status["store"] == run.url and status["best_fitness"] == run.best().fitness
    assert set(status["workers"]) and all({"steps", "train_s", "adopted"} <= set(w) for w in status["workers"].values())

    best = as_json("best", digits_store)
    card = run.summary()
    assert {k: best[k] for k in card} == json.loads(json.dumps(card))
    assert best["step"] == run.best().step and best["test_accuracy"] is not None
    assert best["mutations"] == len(run.lineage()) - 1 and best["final"]["status"] == "ok"

    lineage = as_json("lineage", digits_store)
    assert [row["step"] for row in lineage["lineage"]] == [r.step for r in run.lineage()]
    assert lineage["lineage"][0]["mutation"] is None and lineage["step"] == best["step"]
    assert as_json("lineage", digits_store, "12")["step"] == 12

    check = as_json("check", digits_store)
    assert check["ok"] and check["finished"] and check["violations"] == [] and check["individuals"] == 14
    (digits_store / "deaths" / "000000000000.json").unlink()
    result = invoke("check", digits_store, "--json")
    broken = json.loads(result.stdout)
    assert result.exit_code == 1 and not broken["ok"] and broken["violations"], broken


def test_best_prints_a_summary_and_the_genome_only_when_asked(digits_store):
    plain = invoke("best", digits_store)
    assert plain.exit_code == 0, plain.output
    assert "parameters" in plain.stdout and "mutations from its initial ancestor" in plain.stdout
    assert "worker-minutes" in plain.stdout and '"vertices"' not in plain.stdout
    with_genome = invoke("best", digits_store, "--genome")
    assert '"vertices"' in with_genome.stdout


def test_set_reaches_any_field_and_is_checked_like_the_config(tmp_path):
    result = invoke("run", "--store", tmp_path / "a", "--set", "train.batches=7", "--set", "keep=all",
                    "--set", "genome_options.initial_channels=4", "--set", "steps=3", "--steps", "9", "--dry-run")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["train"]["batches"] == 7 and shown["keep"] == "all" and shown["steps"] == 3
    assert shown["genome_options"]["initial_channels"] == 4 and shown["train"]["schedule"] == "cosine"
    for bad, field in [("bogus=1", "bogus"), ("population=many", "population"), ("train.batches=-1", "batches"),
                       ("train", "--set")]:
        result = invoke("run", "--store", tmp_path / "b", "--set", bad, "--dry-run")
        assert result.exit_code == 2 and field in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_choices_are_listed_and_enforced(tmp_path):
    helped = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "250"}).stdout
    for choices in ("fixed (one network", "package.module:Class", "tournament|aging|random|generational", "table:PATH",
                    "ray|local"):
        assert choices in helped, choices
    result = invoke("run", "--store", tmp_path / "x", "--genome", "resnet", "--dry-run")
    assert result.exit_code == 2 and "resnet" in result.output and not (tmp_path / "x").exists()
    result = invoke("run", "--store", tmp_path / "x", "--fitness", "nonsense", "--dry-run")
    assert result.exit_code == 2 and "fitness" in result.output + result.stderr and not (tmp_path / "x").exists()
    assert "ray|local" in CliRunner().invoke(app, ["resume", "--help"], env={"COLUMNS": "250"}).stdout


def test_storage_options_reach_every_command(tmp_path, moto_endpoint):  # noqa: F811 - the fixture
    endpoint, client = moto_endpoint
    bucket = f"evolve-cli-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    options = tmp_path / "s3.json"  # from a file, the endpoint nowhere else: s3fs would go to AWS without it
    options.write_text(json.dumps(s3_options(endpoint)))
    url = f"s3://{bucket}/run"
    so = ("--storage-options", str(options))
    result = invoke("run", "--store", url, "--fitness", "synthetic", "--population", "4", "--steps", "6",
                    "--executor", "local", *so)
    assert result.exit_code == 0, result.output + result.stderr
    assert as_json("status", url, *so)["done"] == 10
    inline = ("--storage-options", json.dumps(s3_options(endpoint)))
    assert as_json("check", url, *inline)["ok"]
    assert as_json("best", url, *so)["step"] < 10
    assert as_json("lineage", url, *so)["lineage"]
    for command in (["resume", url, "--executor", "local", "--steps", "8"], ["gc", url], ["doctor", url],
                    ["export", url, tmp_path / "run.parquet"], ["plot", url, tmp_path / "run.png"],
                    ["tensorboard", url, "--logdir", tmp_path / "tb", "--no-model-graph"]):
        result = invoke(*command, *so)
        assert result.exit_code == 0, (command, result.output + result.stderr)
    assert as_json("status", url, *so)["done"] == 12
    result = invoke("status", url, "--storage-options", "{not json")
    assert result.exit_code == 2 and "--storage-options" in result.stderr
