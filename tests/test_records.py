"""The typed records (evolve.store.records): what they accept, what they refuse, and stores of a past release.

``tests/stores/0.1.0/`` holds two stores written by evolve 0.1.0 (before the records were typed) and
never rewritten: a trained DNA run on digits (weights, a tested best, a final model, a selection
retry) and a synthetic Genetic-CNN run (generation records). Every reader must still read them and
``resume`` must extend them: that is what the schema version promises.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.store.records import (
    SCHEMA,
    Claim,
    Individual,
    RecordError,
    Selection,
    Tombstone,
    model_for,
    parse,
    problem,
    schema_problem,
)

STORES = Path(__file__).parent / "stores" / "0.1.0"
GOLDEN = Path(__file__).parent / "golden"
GENOME = {"kind": "dna", "version": 1}


def individual(**fields):
    return {"step": 4, "fitness": 0.5, "genome": GENOME, **fields}


# -- the models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.json")))
def test_every_golden_record_parses_and_round_trips(name):
    """The records this release writes: each parses as its model, and to_json gives back every field."""
    records = json.loads((GOLDEN / name).read_text())
    typed = 0
    for key, data in records.items():
        model = model_for(key)
        if model is None or not isinstance(data, dict):
            continue
        assert parse(model, data).to_json() == data, key
        typed += 1
    assert typed > 20


def test_core_fields_are_strict_and_name_the_field():
    assert parse(Individual, individual()).parent is None
    for bad, field in [({"step": "4"}, "step"), ({"step": -1}, "step"), ({"step": True}, "step"),
                       ({"fitness": "0.5"}, "fitness"), ({"fitness": None}, "fitness"),
                       ({"fitness": False}, "fitness"), ({"genome": [1]}, "genome")]:
        with pytest.raises(RecordError, match=f"^{field} is "):
            parse(Individual, individual(**bad))
    with pytest.raises(RecordError, match="^genome is missing"):
        parse(Individual, {"step": 4, "fitness": 0.5})
    with pytest.raises(RecordError, match="^killed_at_step is"):
        parse(Tombstone, {"step": 3, "killed_at_step": "7"})
    with pytest.raises(RecordError, match="not an object"):
        parse(Individual, [1, 2])
    assert problem("individuals/000000000004.json", individual(fitness="x")).startswith("fitness is 'x'")
    assert problem("individuals/000000000004.json", individual()) is None
    assert problem("generations/000000000001.json", {"anything": 1}) is None  # read as plain JSON


def test_nan_fitness_is_a_record_but_never_a_finite_fitness():
    record = parse(Individual, individual(fitness=math.nan, status="failed", reason="loss is nan"))
    assert math.isnan(record.fitness) and record.finite_fitness is None and not record.ok


junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
LENIENT = ["origin", "generation", "parents", "mutation", "loser", "attempt", "raw_fitness", "val_accuracy",
           "test_accuracy", "status", "reason", "hash", "metrics", "timings", "worker", "adopted", "seed",
           "weights", "created_at", "evaluations"]


@given(st.dictionaries(st.sampled_from(LENIENT), junk, max_size=6))
def test_a_wrong_type_outside_the_core_reads_as_missing_never_unreadable(fields):
    """Older stores wrote odd values in places: the readers always skipped them, not the record."""
    record = parse(Individual, individual(**fields))
    assert record.step == 4 and record.fitness == 0.5
    assert all(isinstance(p, int) for p in record.parents)
    assert record.metrics.params is None or isinstance(record.metrics.params, int)
    assert record.weights is None or isinstance(record.weights.key, str)
    assert record.mutation is None or record.mutation.name is None or isinstance(record.mutation.name, str)


def test_fields_this_release_does_not_know_are_kept():
    record = parse(Individual, individual(tomorrow={"x": 1}, metrics={"params": 3, "gpu_s": 2.0}))
    assert record.to_json()["tomorrow"] == {"x": 1} and record.to_json()["metrics"] == {"params": 3, "gpu_s": 2.0}
    claim = parse(Claim, {"step": 9, "worker": "w", "pid": 12, "selection": {"parent": 1, "loser": 2, "attempt": 0}})
    assert claim.selection == Selection(parent=1, loser=2, attempt=0) and claim.to_json()["pid"] == 12


def test_a_newer_schema_is_refused_by_name(tmp_path):
    assert schema_problem({"schema": SCHEMA}) is None
    assert "upgrade evolve" in schema_problem({"schema": SCHEMA + 1})
    store = tmp_path / "newer"
    shutil.copytree(STORES / "gcnn-synthetic", store)
    run = json.loads((store / "run.json").read_text())
    (store / "run.json").write_text(json.dumps({**run, "schema": SCHEMA + 1}))
    for command in (["status", str(store)], ["check", str(store)], ["resume", str(store), "--executor", "local"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert f"schema {SCHEMA + 1} is newer than this evolve reads" in result.output
        assert "Traceback" not in result.output


# -- stores of a past release --------------------------------------------------------------------


@pytest.mark.parametrize("name, individuals", [("dna-digits", 14), ("gcnn-synthetic", 12)])
def test_a_store_of_release_0_1_0_reads_and_resumes(tmp_path, name, individuals):
    store = tmp_path / name
    shutil.copytree(STORES / name, store)
    runner = CliRunner()

    def ok(*command: str) -> str:
        result = runner.invoke(app, list(command))
        assert result.exit_code == 0, (command, result.output)
        return result.output

    assert ": ok (finished)" in ok("check", str(store))
    assert f"{individuals}/{individuals}" in ok("status", str(store))
    ok("best", str(store))
    ok("lineage", str(store))
    ok("export", str(store), str(tmp_path / "run.parquet"))
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "run.parquet")
    assert table.num_rows == individuals and None not in table.column("genome_kind").to_pylist()
    ok("plot", str(store), str(tmp_path / "run.png"))
    ok("tensorboard", str(store), "--logdir", str(tmp_path / "tb"), "--no-model-graph")

    population = json.loads((store / "run.json").read_text())["config"]["population"]
    ok("resume", str(store), "--executor", "local", "--steps", str(individuals - population + 4))
    assert len(list((store / "individuals").glob("*.json"))) == individuals + 4
    assert ": ok (finished)" in ok("check", str(store))


def test_a_malformed_record_is_one_violation_naming_its_field_and_readers_skip_it(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(STORES / "gcnn-synthetic", store)
    path = store / "individuals" / "000000000005.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "fitness": "high"}))
    result = CliRunner().invoke(app, ["check", str(store)])
    assert result.exit_code == 1
    violations = [line for line in result.output.splitlines() if "violation:" in line]
    assert violations == ["violation: individuals/000000000005.json: malformed (fitness is 'high': not a number)"]
    exported = CliRunner().invoke(app, ["export", str(store), str(tmp_path / "run.parquet")])
    assert exported.exit_code == 0 and "11 individuals" in exported.output, exported.output
