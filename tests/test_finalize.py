"""evolve finalize: its stages, their records, a kill mid-stage, the table."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import evolve
from evolve.cli.main import app
from evolve.config import ConfigError
from genomes import DNA

STORES = Path(__file__).parent / "stores" / "0.1.0"


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(STORES / "dna-digits", path)
    return path


def test_the_stages_and_their_table(store, tmp_path):
    run = evolve.open(str(store))
    rows = run.finalize(batches=40, cycles=2, top=3)
    by = {r["stage"]: r for r in rows}
    assert {"found", "final", "retrain", "snapshots", "top", "distill", "prune", "lenet5"} <= set(by)
    records = {p.stem: json.loads(p.read_text()) for p in (store / "results" / "finalize").glob("*.json")}
    assert {"retrain", "snapshots", "top-3", "distill", "prune"} <= set(records)
    assert len([name for name in records if name.startswith("member-")]) == 2
    retrain, snaps, top = records["retrain"], records["snapshots"], records["top-3"]
    assert len(retrain["weights"]) == 2 and retrain["snapshot_test_accuracy"][-1] == retrain["test_accuracy"]
    assert snaps["members"] == [w["key"] for w in retrain["weights"]] and snaps["weights"] == []
    assert len(top["members"]) == 3 and top["members"][0] == retrain["weights"][-1]["key"]
    assert len({json.dumps(records[m.rsplit("/", 1)[-1].rsplit("-", 2)[0]]["genome"], sort_keys=True)
                for m in top["members"]}) == 3, "distinct architectures"
    assert records["distill"]["teacher"] == "top-3" and records["distill"]["batches"] == 40
    assert by["snapshots"]["params"] == 2 * by["retrain"]["params"]
    pruned = records["prune"]  # Fisher pruning of the retrained model, a valid DNA again
    assert pruned["params_before"] == by["retrain"]["params"] and pruned["params"] <= 0.5 * pruned["params_before"]
    assert DNA.from_json(pruned["genome"]).param_count((1, 8, 8), 10) == pruned["params"] == by["prune"]["params"]
    assert pruned["rounds"] >= 1 and sum(pruned["removed"].values()) >= 1
    assert by["prune"]["compute_seconds"] > by["retrain"]["compute_seconds"]
    assert by["top"]["compute_seconds"] > by["retrain"]["compute_seconds"] > 0
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert run.check().ok
    again = run.finalize(batches=40, cycles=2, top=3)  # nothing is redone
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    assert json.loads((store / "results" / "finalize" / "retrain.json").read_text()) == retrain
    (store / retrain["weights"][0]["key"]).unlink()
    assert any("its weights" in v and "missing" in v for v in run.check().violations)


def test_the_cli_prints_the_table_and_writes_parquet(store, tmp_path):
    import pyarrow.parquet as pq

    result = CliRunner().invoke(app, ["finalize", str(store), "--batches", "20", "--cycles", "2", "--stage", "retrain",
                                      "--stage", "snapshots", "--table", str(tmp_path / "t.parquet")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "snapshot ensemble" in result.stdout and "LeNet-5" in result.stdout
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert {r["stage"] for r in table} == {"found", "final", "retrain", "snapshots", "lenet5"}
    for command in ("status", "best"):
        shown = CliRunner().invoke(app, [command, str(store)], env={"COLUMNS": "300"})
        assert shown.exit_code == 0 and "finalize (test): retrained " in shown.stdout, shown.output
        assert "snapshot ensemble" in shown.stdout
    listed = json.loads(CliRunner().invoke(app, ["status", str(store), "--json"]).stdout)["finalize"]
    assert [r["stage"] for r in listed] == ["retrain", "snapshots"] and all(0 <= r["test_accuracy"] <= 1 for r in listed)
    bad = CliRunner().invoke(app, ["finalize", str(store), "--stage", "shrink"])
    assert bad.exit_code == 2 and "shrink" in bad.stderr
    with pytest.raises(ConfigError, match="'train' runs only"):
        evolve.open(str(STORES / "gcnn-synthetic")).finalize()


def test_a_finalize_killed_mid_stage_resumes_without_redoing_or_duplicating(store):
    settings = ["--batches", "1500", "--cycles", "3"]
    command = [sys.executable, "-m", "evolve.cli.main", "finalize", str(store), *settings]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    retrain = store / "results" / "finalize" / "retrain.json"
    deadline = time.monotonic() + 300
    while not retrain.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert retrain.exists(), "the first stage never finished"
    time.sleep(0.3)  # into the next training stage
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = json.loads(retrain.read_text())
    done = {p.name for p in (store / "results" / "finalize").glob("*.json")}
    assert "distill.json" not in done, "killed too late to test a resume"
    other = CliRunner().invoke(app, ["finalize", str(store), "--batches", "60", "--cycles", "3"])
    assert other.exit_code == 2 and "other settings: batches 1500 (now 60)" in other.stderr, other.stderr
    result = CliRunner().invoke(app, ["finalize", str(store), *settings, "--table", str(store.parent / "t.parquet")])
    assert result.exit_code == 0, result.output
    assert "finalize retrain: recorded before, kept" in result.stderr
    assert json.loads(retrain.read_text()) == first, "a completed stage is never redone"
    records = sorted(p.name for p in (store / "results" / "finalize").glob("*.json"))
    assert len(records) == len(set(records)) and "distill.json" in records
    assert evolve.open(str(store)).check().ok


def test_the_finalize_bench_smoke(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.finalize import main

    assert main(["--smoke", "--dir", str(tmp_path), "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "| retrained" in out and "top-K ensemble vs the best single" in out and "distilled vs retrained" in out


def test_gc_removes_the_finalize_weights_no_record_will_name(store):
    from evolve.store.sweep import collect

    run = evolve.open(str(store))
    run.finalize(batches=10, cycles=2, stages=("retrain",))
    folder = store / "results" / "finalize"
    named = sorted(p.name for p in folder.glob("retrain-*.safetensors"))
    (folder / "retrain-0-0123456789ab.safetensors").write_bytes(b"a losing finalize's")
    (folder / "distill-0-0123456789ab.safetensors").write_bytes(b"a stage still training")
    report = collect(run.store, keep_best=1, grace_seconds=0.0)
    assert "results/finalize/retrain-0-0123456789ab.safetensors" in report.removed
    assert not any("distill" in key for key in report.removed)
    assert sorted(p.name for p in folder.glob("retrain-*.safetensors")) == named
    assert (folder / "distill-0-0123456789ab.safetensors").exists() and run.check().ok


def test_the_views_show_the_finalize_models_and_follow_new_stages(store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evolve.views.tensorboard import sync

    run = evolve.open(str(store))
    run.finalize(batches=10, cycles=2, stages=("retrain",))
    logdir = tmp_path / "tb"

    def finalize_view() -> tuple[dict[str, float], str]:
        events = EventAccumulator(str(logdir / "finalize"), size_guidance={"tensors": 0, "scalars": 0})
        events.Reload()
        scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
        return scalars, events.Tensors("finalize/table")[-1].tensor_proto.string_val[0].decode()

    sync(run.store, str(logdir), model_graph=False)
    retrain = json.loads((store / "results" / "finalize" / "retrain.json").read_text())
    scalars, text = finalize_view()
    assert scalars["finalize/retrain/test_accuracy"] == pytest.approx(retrain["test_accuracy"])
    assert scalars["finalize/retrain/params"] == retrain["params"] and "retrained (10 batches" in text
    assert [p.name.rsplit("-", 1)[-1] for p in (logdir / "lineage").iterdir()] == ["f1"]
    run.finalize(batches=10, cycles=2, stages=("snapshots",))  # a stage added later: the views follow
    sync(run.store, str(logdir), model_graph=False)
    scalars, text = finalize_view()
    assert "finalize/snapshots/test_accuracy" in scalars and "snapshot ensemble" in text
    assert len(list((logdir / "finalize").iterdir())) == 1
    assert [p.name.rsplit("-", 1)[-1] for p in (logdir / "lineage").iterdir()] == ["f2"]
    assert run.plot(str(tmp_path / "figure1.png")).width > 0


def test_on_ray_each_phases_trainings_run_as_tasks_and_the_result_is_the_same_kind(store):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    run = evolve.open(str(store))
    try:
        rows = run.finalize(batches=10, cycles=2, top=2, stages=("retrain", "top", "prune"), prune_batches=5,
                            executor="ray")
    finally:
        ray.shutdown()
    records = {p.stem: json.loads(p.read_text()) for p in (store / "results" / "finalize").glob("*.json")}
    assert {"retrain", "top-2", "prune"} <= set(records) and "distill" not in records
    trained = [records[name] for name in records if name == "retrain" or name.startswith("member-") or name == "prune"]
    assert len(trained) == 3 and all(r["pid"] != os.getpid() for r in trained), "trained in Ray's workers"
    assert records["top-2"]["pid"] == os.getpid()  # an ensemble trains nothing: here
    assert {r["stage"] for r in rows} >= {"retrain", "top", "prune"} and run.check().ok
    again = run.finalize(batches=10, cycles=2, top=2, stages=("retrain", "top", "prune"), prune_batches=5)
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]  # nothing redone


def test_training_from_the_evolved_weights_pins_them_until_finalize_is_done(store):
    from evolve.final.finalize import Plan, _settle_plan
    from evolve.store.backend import StoreError
    from evolve.store.sweep import collect

    run = evolve.open(str(store))
    plan = dict(batches=10, cycles=2, top=2, start="weights", stages=("retrain", "top"))
    steps = [a["step"] for a in _settle_plan(run.store, Plan(**plan))["architectures"]]
    assert 5 in steps and (store / "deaths" / f"{5:012d}.json").exists()  # a dead member: gc's to take, but pinned
    assert sorted(p.name for p in (store / "pins").iterdir()) == [f"{s:012d}-finalize.json" for s in sorted(steps)]
    assert not [k for k in collect(run.store, keep_best=1, grace_seconds=0.0).removed if k.startswith(f"weights/{5:012d}")]
    run.finalize(**plan)
    records = {p.stem: json.loads(p.read_text()) for p in (store / "results" / "finalize").glob("*.json")}
    assert records["retrain"]["start"] == records["member-5"]["start"] == "weights"
    assert [p.name for p in (store / "pins").iterdir()] == [f"{steps[0]:012d}-finalize.json"], \
        "the member is unpinned; the best's weights wait for distill, which also starts from them"
    assert [k for k in collect(run.store, keep_best=1, grace_seconds=0.0).removed if k.startswith(f"weights/{5:012d}")]
    run.finalize(**{**plan, "stages": ("retrain",)})  # a later finalize of other stages keeps the pin
    assert (store / "pins" / f"{steps[0]:012d}-finalize.json").exists()
    run.finalize(**{**plan, "stages": ("distill",)})
    assert json.loads((store / "results" / "finalize" / "distill.json").read_text())["start"] == "weights"
    assert not list((store / "pins").iterdir())  # unpinned once every training that reads them is done
    with pytest.raises(StoreError, match="start 'weights' \\(now 'scratch'\\)"):
        run.finalize(**{**plan, "start": "scratch"})


def test_a_finalize_that_loses_the_race_for_the_plan_unpins_what_it_pinned(store):
    from evolve.final.finalize import Plan, _settle_plan
    from evolve.store.keys import finalize_key, pin_key
    from evolve.store.snapshot import Snapshot

    run = evolve.open(str(store))
    individuals = Snapshot.read(run.store).individuals
    plan = Plan(batches=10, cycles=2, top=2, start="weights")
    racer: list[int] = []
    create_json = run.store.create_json

    def raced(key, record):  # a racing finalize, which ranked an older population, writes its plan first
        if key == finalize_key("plan") and not racer:
            ours = [a["step"] for a in record["architectures"]]
            racer.extend([ours[0], next(s for s in sorted(individuals) if s not in ours
                                        and individuals[s].get("hash") != individuals[ours[0]].get("hash"))])
            for step in racer:
                create_json(pin_key(step, "finalize"), {"step": step})
            create_json(key, {**record, "architectures": [{"step": s, "genome": individuals[s]["genome"],
                                                           "fitness": individuals[s]["fitness"]} for s in racer]})
        return create_json(key, record)

    run.store.create_json = raced
    kept = _settle_plan(run.store, plan)
    assert [a["step"] for a in kept["architectures"]] == racer
    assert sorted(p.name for p in (store / "pins").iterdir()) == [f"{s:012d}-finalize.json" for s in sorted(racer)]


def test_pins_are_released_once_no_stage_will_read_them(store):
    from evolve.final.finalize import release_pins
    from evolve.store.keys import finalize_key, pin_key

    run = evolve.open(str(store))
    architectures = [{"step": 3}, {"step": 5}, {"step": 7}]
    for a in architectures:
        run.store.create_json(pin_key(a["step"], "finalize"), {"step": a["step"]})
    assert release_pins(run.store, architectures) == []
    run.store.create_json(finalize_key("member-5"), {"stage": "member-5", "status": "failed", "reason": "nan loss"})
    run.store.create_json(finalize_key("retrain"), {"stage": "retrain", "status": "ok"})
    assert release_pins(run.store, architectures) == [5]  # failed, it is not retried: no stage reads 5 again
    (store / "results" / "finalize" / "retrain.json").unlink()
    run.store.create_json(finalize_key("retrain"), {"stage": "retrain", "status": "failed", "reason": "nan loss"})
    assert release_pins(run.store, architectures) == [3]  # distill cannot build on a failed retrain
    assert [p.name for p in (store / "pins").iterdir()] == [f"{7:012d}-finalize.json"]


def test_training_from_weights_gc_took_before_the_pin_is_refused_by_name(store):
    from evolve.store.backend import StoreError

    for path in (store / "weights").glob(f"{5:012d}-*"):
        path.unlink()
    with pytest.raises(StoreError, match="individual 5's weights are gone"):
        evolve.open(str(store)).finalize(batches=10, cycles=2, top=2, start="weights", stages=("retrain", "top"))
