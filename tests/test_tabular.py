"""A tabular benchmark as the fitness, and random sampling as a strategy of the engine.

The shipped NAS-Bench-201 table is real data: its facts are checked as the benchmark publishes them.
Runs on it build no network and write no weights, so the views must work without any.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import evolve
from evolve.cli import app
from evolve.config import ConfigError, TableSpec, build_config, parse_table_spec
from evolve.store.backend import Store
from evolve.store.check import check_store
from evolve.training.tabular import load_table, table_url
from genomes import SearchSpace
from genomes.nb201.genome import NB201

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-cifar10.csv"


def built_in() -> dict[str, float]:
    return load_table(TableSpec("nb201-cifar10"), "nb201").values


def write_table(path: Path, rows: dict[str, list]) -> str:
    pq.write_table(pa.table(rows), path)
    return str(path)


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text and (result.exception is None or isinstance(result.exception, SystemExit)), text
    return result


def arch(genome: str) -> str:
    """The benchmark string of a genome as ``Run.individuals()`` gives it (JSON text)."""
    return NB201.from_json(json.loads(genome)).to_string()


def table_run(tmp_path: Path, **overrides) -> evolve.api.Run:
    settings = {"store": str(tmp_path / "run"), "genome": "nb201", "fitness": "table:nb201-cifar10",
                "population": 10, "steps": 40, "workers": 1, "seed": 3} | overrides
    return evolve.run(executor="local", **settings)


# ---------------------------------------------------------------------------- the table


def test_the_shipped_table_is_nas_bench_201_on_cifar10():
    values = built_in()
    assert len(values) == 15_625
    assert max(values.values()) == pytest.approx(94.37, abs=0.005)
    assert statistics.median(values.values()) == pytest.approx(90.7, abs=0.1)
    first = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert values[first] == pytest.approx(85.8633)


def test_every_row_of_the_table_round_trips_through_the_genome():
    table = pq.read_table(table_url("nb201-cifar10")).column("arch").to_pylist()
    for arch in table:
        genome = NB201.from_string(arch)
        assert genome.to_string() == arch
        assert NB201.from_json(json.loads(json.dumps(genome.to_json()))) == genome


@pytest.mark.skipif(not SHARED.exists(), reason="the shared data folder is not beside this checkout")
def test_the_shipped_table_matches_the_shared_one():
    import pyarrow.csv

    shared = pyarrow.csv.read_csv(SHARED)
    assert dict(zip(shared.column("arch").to_pylist(), shared.column("test_accuracy").to_pylist())) == built_in()


@pytest.mark.parametrize("text, spec", [
    ("table:t.csv", TableSpec("t.csv")),
    ("table:s3://b/t.parquet#valid_acc", TableSpec("s3://b/t.parquet", "valid_acc")),
    ("table:t.csv#acc,seconds", TableSpec("t.csv", "acc", "seconds")),
    ("table:t.csv#acc,seconds*0.001", TableSpec("t.csv", "acc", "seconds", 0.001)),
])
def test_the_fitness_names_path_metric_and_cost(text, spec):
    assert parse_table_spec(text) == spec


@pytest.mark.parametrize("fitness, genome, words", [
    ("table:t.csv#acc,s*x", "nb201", ["fitness", "table:PATH"]),
    ("table:nb201-cifar10", "gcnn", ["fitness", "string form", "'gcnn'"]),
    ("table:", "nb201", ["fitness", "table:PATH"]),
])
def test_a_bad_table_fitness_is_refused_in_the_config(fitness, genome, words):
    with pytest.raises(ConfigError) as err:
        build_config({"genome": genome, "fitness": fitness})
    assert all(w in str(err.value) for w in words), str(err.value)


ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("rows, metric, words", [
    ({"arch": [ARCH], "a": [1.0], "b": [2.0]}, None, ["several numeric columns", "'a'", "'b'", "#COLUMN"]),
    ({"arch": [ARCH], "a": [1.0]}, "acc", ["no column 'acc'", "'arch'", "'a'"]),
    ({"arch": [ARCH], "note": ["x"]}, "note", ["'note'", "not numbers"]),
    ({"arch": ["|conv~0|+|"], "a": [1.0]}, None, ["row 1", "'arch'", "'|conv~0|+|'", "not a nb201 genome"]),
    ({"arch": [ARCH, ARCH], "a": [1.0, 2.0]}, None, ["row 2", "repeats"]),
    ({"name": ["x"], "cell": [ARCH], "a": [1.0]}, None, ["several string columns", "'arch'"]),
    ({"a": [1.0]}, None, ["no string column"]),
])
def test_a_malformed_table_is_refused_naming_the_file_and_column(tmp_path, rows, metric, words):
    path = write_table(tmp_path / "t.parquet", rows)
    with pytest.raises(ConfigError) as err:
        load_table(TableSpec(path, metric), "nb201")
    assert path in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_a_missing_table_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.csv"):
        table_run(tmp_path, fitness=f"table:{tmp_path / 'nowhere.csv'}")
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_csv_table_on_any_fsspec_url_with_a_chosen_column(tmp_path):
    import fsspec

    with fsspec.open("memory://tables/t.csv", "w") as f:
        f.write(f"arch,valid,test\n{ARCH},80.5,81.25\n")
    table = load_table(parse_table_spec("table:memory://tables/t.csv#test"), "nb201")
    assert table.values == {ARCH: 81.25} and table.metric == "test" and table.key == "arch"


# ---------------------------------------------------------------------------- runs on a table


def test_a_table_run_looks_children_up_and_every_view_works_without_weights(tmp_path):
    store = tmp_path / "run"
    done = cli("run", "--executor", "local", "--store", store, "--genome", "nb201", "--fitness",
               "table:nb201-cifar10", "--population", 10, "--steps", 60, "--workers", 2, "--seed", 3)
    assert done.exit_code == 0, done.output
    values = built_in()
    run = evolve.open(str(store))
    table = run.individuals()
    assert len(table) == 70 and (table["status"] == "ok").all()
    for genome, fitness in zip(table["genome"], table["fitness"]):
        assert fitness == values[arch(genome)]
    best = run.best()
    assert best.fitness == max(table["fitness"])
    assert f"best individual {best.step}: {best.fitness:g} in table:nb201-cifar10" in done.output
    assert run.lineage()[-1].step == best.step and run.check().ok
    assert not list(store.glob("weights/*"))
    assert run.result()["fitness"] == best.fitness

    status = cli("status", store).output
    assert "70/70 individuals" in status and f"best {best.fitness:.4g}" in status  # a table's percent, not x100
    assert f"{best.fitness:.4g}" in cli("lineage", store).output
    assert arch(json.dumps(best.genome)) in cli("best", store).output
    assert cli("lineage", store).exit_code == 0
    assert cli("export", store, tmp_path / "run.parquet").exit_code == 0
    assert pq.read_table(tmp_path / "run.parquet").num_rows == 70
    assert cli("plot", store, tmp_path / "run.png").exit_code == 0 and (tmp_path / "run.png").stat().st_size
    assert cli("tensorboard", store, "--logdir", tmp_path / "tb").exit_code == 0
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_a_genome_absent_from_the_table_fails_that_child_naming_it(tmp_path):
    values = built_in()
    rng = random.Random(0)
    kept = dict(rng.sample(sorted(values.items()), 3_000))
    path = write_table(tmp_path / "part.parquet", {"arch": list(kept), "acc": list(kept.values())})
    run = table_run(tmp_path, fitness=f"table:{path}", population=6, steps=30)
    table = run.individuals()
    failed = table[table["status"] == "failed"]
    assert len(failed) > 0 and (table["status"] == "ok").any()
    for genome, reason, fitness in zip(failed["genome"], failed["reason"], failed["fitness"]):
        cell = arch(genome)
        assert cell not in kept and cell in reason and path in reason and fitness == -math.inf
    assert run.check().ok


def test_a_cost_column_makes_each_evaluation_take_its_time(tmp_path):
    values = built_in()
    path = write_table(tmp_path / "cost.parquet", {"arch": list(values), "acc": list(values.values()),
                                                   "seconds": [20.0] * len(values)})
    run = table_run(tmp_path, fitness=f"table:{path}#acc,seconds*0.001", population=4, steps=4)
    assert (run.individuals()["train_seconds"] >= 0.019).all()


def test_the_preset_runs_in_seconds_and_hands_back_a_cell_of_the_table(tmp_path):
    store = tmp_path / "nb201"
    done = cli("run", "--preset", "nb201-cifar10", "--executor", "local", "--store", store)
    assert done.exit_code == 0, done.output
    run = evolve.open(str(store))
    assert run.status()["done"] == 150 and run.check().ok
    assert run.best().fitness == max(run.individuals()["fitness"]) and run.best().fitness in built_in().values()


# ---------------------------------------------------------------------------- random sampling


def test_random_sampling_draws_every_child_and_keeps_the_invariants(tmp_path):
    run = table_run(tmp_path, selection="random", population=5, steps=40, workers=2)
    table = run.individuals().set_index("step")
    children = table.loc[5:]
    assert (children["origin"] == "sample").all()
    assert all(len(p) == 0 for p in children["parents"])
    assert run.status()["live"] == 5 and run.check().ok
    report = check_store(Store(str(tmp_path / "run")), 5, 45)
    assert report.ok, report.violations
    # the draws are the run seed's: a second run with the same seed draws the same cells
    again = table_run(tmp_path / "again", selection="random", population=5, steps=40, workers=1)
    assert sorted(again.individuals()["genome"]) == sorted(table["genome"])


def test_random_sampling_is_uniform_over_the_space():
    rng, space = random.Random(7), SearchSpace()
    counts = [{} for _ in range(6)]
    for _ in range(2_500):
        for edge, op in enumerate(NB201.sample(rng, space).ops):
            counts[edge][op] = counts[edge].get(op, 0) + 1
    for edge in counts:
        chi2 = sum((n - 500) ** 2 / 500 for n in edge.values())
        assert len(edge) == 5 and chi2 < 18.47  # 4 degrees of freedom, p = 0.001


def test_random_sampling_needs_a_space_it_can_draw_from():
    with pytest.raises(ConfigError, match="selection 'random'.*'dna'|DNA"):
        build_config({"genome": "dna", "selection": "random", "fitness": "synthetic"})
