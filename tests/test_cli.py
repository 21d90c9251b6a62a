"""The `evolve` command line: the happy path, and bad input that must give one line, not a traceback.

Everything runs in-process through typer's CliRunner (no interpreter start-up per command).
Each bad input must give exactly one ``error:`` line naming the culprit, a non-zero exit,
no traceback, and leave every record of an existing store byte-for-byte as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.store.backend import Store
from evolve.store.snapshot import Snapshot

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in text, text
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"evolve {' '.join(map(str, args))} raised {result.exception!r}\n{text}")
    return result


def one_line_error(result, *names: str) -> str:
    """The single ``error:`` line on stderr; it must name every one of ``names``."""
    assert result.exit_code not in (0, None), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (heartbeats included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def synthetic_run(tmp_path: Path, name: str = "run", population: int = 6, steps: int = 10) -> Path:
    store = tmp_path / name
    result = invoke("run", "--executor", "local", "--store", store, "--fitness", "synthetic",
                    "--population", population, "--steps", steps, "--workers", "2")
    assert result.exit_code == 0, result.output + result.stderr
    return store


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A small finished synthetic run; tests copy it before damaging it."""
    return synthetic_run(tmp_path_factory.mktemp("cli"))


# -- the happy path -------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_status_lineage_best_check_gc_on_a_tiny_real_run(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('population = 4\nsteps = 4\nworkers = 2\ndataset = "digits"\n'
                      "final_batches = 10\n[train]\nbatches = 5\nbatch_size = 32\neval_batch_size = 500\n")
    store = tmp_path / "run"
    result = invoke("run", "--executor", "local", "--config", config, "--store", store)
    assert result.exit_code == 0, result.output + result.stderr
    assert "8/8 individuals, 4 live" in result.output
    assert "best individual" in result.output

    result = invoke("status", store)
    assert result.exit_code == 0 and "8/8 individuals (0 in flight), 4 live" in result.output

    result = invoke("lineage", store)
    assert result.exit_code == 0 and "initial" in result.output

    export = tmp_path / "best.safetensors"
    result = invoke("best", store, "--export", export)
    assert result.exit_code == 0 and f"wrote {export}" in result.output, result.output + result.stderr
    from safetensors import safe_open

    from genomes import genome_from_json

    with safe_open(str(export), "pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is not a dict
    assert tensors, "the export holds no weights"
    genome = genome_from_json(json.loads(meta["genome"]))
    assert genome.to_json() == json.loads(meta["genome"])
    step = int(meta["step"])
    record = json.loads((store / "individuals" / f"{step:012d}.json").read_text())
    assert record["genome"] == json.loads(meta["genome"])
    final = json.loads((store / "results" / "final" / f"{step:012d}.json").read_text())
    assert meta["final"] == "True" and "val_accuracy" not in meta, "the final model trained on validation"
    assert float(meta["test_accuracy"]) == final["test_accuracy"] and meta["final_training"] == "from scratch"
    assert "final model (the best trained from scratch, 10 batches on train+val): test" in result.output

    result = invoke("check", store)
    assert result.exit_code == 0 and "ok (finished)" in result.output, result.output + result.stderr

    weights_before = len(list((store / "weights").iterdir()))
    assert weights_before < 8, "the run's workers collected no dead weights"  # keep = "needed"
    snap = Snapshot.read(Store.open(str(store)))
    from evolve.store.keep import best_ever

    needed = set(snap.live()) | best_ever(((s, r["fitness"]) for s, r in snap.individuals.items()), 5)
    result = invoke("gc", store, "--grace", "0")  # keeps what the workers kept: keep_best (5) is the run's
    removed = weights_before - len(needed)
    assert result.exit_code == 0 and f"removed {removed} weight files" in result.output, result.output
    assert len(list((store / "weights").iterdir())) == len(needed)
    assert invoke("check", store).exit_code == 0
    result = invoke("best", store, "--export", tmp_path / "again.safetensors")  # the best is still live
    assert result.exit_code == 0, result.output + result.stderr
    for bad in (tmp_path / "missing" / "b.safetensors", tmp_path):  # a folder that is not there; a folder
        one_line_error(invoke("best", store, "--export", bad), "--export", f"cannot write {bad}")
    line = one_line_error(invoke("export", store, tmp_path / "missing" / "t.parquet"), str(tmp_path / "missing"))
    assert ".tmp-" not in line


@pytest.mark.parametrize("kind", ["dna", "gcnn"])
def test_genome_sample_prints_a_parameter_count(kind):
    result = invoke("genome", "sample", "--kind", kind, "--mutations", "20")
    assert result.exit_code == 0, result.output
    assert "parameters: " in result.output


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    command = [sys.executable, "-m", "evolve.cli.main", "genome", "sample", "--json", "--mutations", "0"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)


def test_no_reference_skips_lenet5_and_a_resume_can_ask_for_it(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('population = 3\nsteps = 2\nworkers = 1\ndataset = "digits"\n'
                      "final_batches = 0\n[train]\nbatches = 3\nbatch_size = 32\neval_batch_size = 500\n")
    store = tmp_path / "run"
    result = invoke("run", "--executor", "local", "--config", config, "--store", store, "--no-reference")
    assert result.exit_code == 0, result.output + result.stderr
    assert "LeNet-5" not in result.output + result.stderr and not (store / "results" / "lenet5.json").exists()
    result = invoke("resume", store, "--executor", "local", "--reference")
    assert result.exit_code == 0, result.output + result.stderr
    assert "reference: LeNet-5" in result.output and (store / "results" / "lenet5.json").exists()


def test_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"evolve {version('evolve')}"


# -- stores that are not there ---------------------------------------------------------------------

@pytest.mark.parametrize("command", ["status", "check", "best", "lineage", "gc"])
def test_missing_store_is_one_line(tmp_path, command):
    missing = tmp_path / "no" / "such" / "store"
    one_line_error(invoke(command, missing), str(missing))
    one_line_error(invoke(command, tmp_path / "empty-name"), str(tmp_path / "empty-name"))
    assert not (tmp_path / "no").exists() and not (tmp_path / "empty-name").exists()


def test_remote_store_that_is_not_there_is_one_line(monkeypatch):
    one_line_error(invoke("status", "memory://no-such-run"), "memory://no-such-run", "run.json")
    one_line_error(invoke("check", "nosuchproto://x/y"), "nosuchproto://x/y")
    # s3 with no credentials anywhere: botocore's NoCredentialsError, not a traceback
    s3fs = pytest.importorskip("s3fs")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        one_line_error(invoke("status", "s3://evolve-no-such-bucket/run"), "s3://evolve-no-such-bucket/run")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_missing_store_resume_is_one_line(tmp_path):
    missing = tmp_path / "nothing"
    one_line_error(invoke("resume", missing, "--executor", "local"), str(missing))
    assert not missing.exists()


def test_folder_without_a_run_is_one_line(tmp_path):
    (tmp_path / "folder").mkdir()
    one_line_error(invoke("status", tmp_path / "folder"), str(tmp_path / "folder"), "run.json")
    one_line_error(invoke("resume", tmp_path / "folder", "--executor", "local"), str(tmp_path / "folder"))


def test_run_into_a_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "store"
    for store in (target, blocker):
        result = invoke("run", "--executor", "local", "--store", store, "--fitness", "synthetic")
        one_line_error(result, str(store))
    assert blocker.read_text() == "not a folder"


def test_run_into_an_unwritable_folder(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        store = folder / "s"
    elif os.path.isdir("/sys/kernel"):  # root writes through permissions, but not into sysfs
        folder, store = None, Path("/sys/evolve-test-store")
    else:
        pytest.skip("running as root with no read-only filesystem to try")
    try:
        result = invoke("run", "--executor", "local", "--store", store, "--fitness", "synthetic")
        one_line_error(result, str(store))
    finally:
        if folder is not None:
            folder.chmod(0o755)
    assert not store.exists()


# -- damaged records --------------------------------------------------------------------------------

def _damaged_copy(finished: Path, tmp_path: Path, step: int, data: bytes | None = None) -> tuple[Path, str]:
    import shutil

    store = tmp_path / "damaged"
    shutil.copytree(finished, store)
    key = f"individuals/{step:012d}.json"
    path = store / key
    path.write_bytes(data if data is not None else path.read_bytes()[: len(path.read_bytes()) // 2])
    return store, key


@pytest.mark.parametrize("damage", ["truncated", "not-an-object", "no-fitness"])
def test_damaged_record_is_reported_by_check_and_skipped_by_views(finished, tmp_path, damage):
    data = {"truncated": None, "not-an-object": b"[1, 2]\n",
            "no-fitness": b'{"step": 3, "genome": {}}\n'}[damage]
    store, key = _damaged_copy(finished, tmp_path, 3, data)
    before = snapshot(store)

    result = invoke("check", store)
    assert result.exit_code == 1, result.output + result.stderr
    violations = [line for line in result.stderr.splitlines() if line.startswith("violation:")]
    assert len(violations) == 1, f"one damaged record should be one violation:\n{result.stderr}"
    assert key in violations[0] and ("does not parse" in violations[0] or "malformed" in violations[0])

    for command in (["status", store], ["best", store], ["lineage", store], ["gc", store, "--dry-run"]):
        result = invoke(*command)
        assert result.exit_code == 0, result.output + result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(warnings) == 1 and warnings[0].startswith("warning: skipped unreadable record " + key), \
            f"evolve {command[0]}: {result.stderr!r}"
    result = invoke("lineage", store, "3")
    assert result.exit_code != 0 and "individual 3 does not exist" in result.stderr
    assert snapshot(store) == before, "a read-only command changed the store"


def test_a_truncated_record_is_refused_by_resume_then_repaired_and_run_again(finished, tmp_path):
    """Damage is refused or repaired, never skipped: resume exits 2 naming the record; `check --repair` moves
    it aside (and rebuilds a damaged tombstone from its killer's records); the resume then runs the step
    again, at once (no lease to wait), to the exact count, with the same child, and check is clean."""
    import shutil

    store = tmp_path / "damaged"
    shutil.copytree(finished, store)
    snap = Snapshot.read(Store.open(str(store)))
    parents = {p for r in snap.individuals.values() for p in r.get("parents") or []}
    children = [s for s in sorted(snap.individuals) if s >= 6]  # a dead child with children of its own, if any
    victim = next((s for s in children if s in snap.deaths and s in parents), next(s for s in children if s in parents
                                                                                   or s in snap.deaths))
    dead = max(s for s in snap.deaths if s != victim)
    for key in (f"individuals/{victim:012d}.json", f"deaths/{dead:012d}.json"):
        data = (store / key).read_bytes()
        (store / key).write_bytes(data[: len(data) // 2])

    one_line_error(invoke("resume", store, "--executor", "local"), f"{store}: record individuals/{victim:012d}"
                          ".json is unreadable (not JSON", "and 1 more", f"`evolve check --repair {store}`")
    result = invoke("status", store)
    assert result.exit_code == 0 and "15/16 individuals" in result.output and "2 unreadable records" in result.output
    result = invoke("best", store)
    assert result.exit_code == 0 and "2 unreadable records skipped (evolve check --repair)" in result.output

    from evolve.runner.drivers import Announcement

    driver = Announcement(Store.open(str(store)))
    driver.open()
    one_line_error(invoke("check", store, "--repair"), "a driver is running this store", "stop it before repairing")
    driver.close()
    result = invoke("check", store, "--repair")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"moved individuals/{victim:012d}.json to damaged/individuals/{victim:012d}.json" in result.stderr
    assert f"wrote deaths/{dead:012d}.json again" in result.stderr and f"step {victim} will run again" in result.stderr
    assert (store / "damaged" / "deaths" / f"{dead:012d}.json").exists(), "nothing is deleted"
    assert json.loads((store / "deaths" / f"{dead:012d}.json").read_text())["killed_at_step"] == \
        snap.deaths[dead]["killed_at_step"]

    import time

    started = time.monotonic()
    result = invoke("resume", store, "--executor", "local")
    assert result.exit_code == 0, result.output + result.stderr
    assert time.monotonic() - started < 30, "the repaired step waited out a lease"
    assert "16/16 individuals, 6 live" in result.output
    result = invoke("check", store)
    assert result.exit_code == 0 and "ok (finished)" in result.output, result.output + result.stderr
    again = json.loads((store / "individuals" / f"{victim:012d}.json").read_text())
    original = snap.individuals[victim]
    assert again["adopted"] and (again["genome"], again["fitness"]) == (original["genome"], original["fitness"])
    assert invoke("check", store, "--repair").output.strip().endswith("nothing to repair: every record parses")


def test_damaged_run_json_is_one_line(finished, tmp_path):
    import shutil

    store = tmp_path / "damaged"
    shutil.copytree(finished, store)
    (store / "run.json").write_bytes(b'{"schema": 1, "conf')
    before = snapshot(store)
    for command in ("status", "check"):
        one_line_error(invoke(command, store), "run.json")
    one_line_error(invoke("resume", store, "--executor", "local"), "run.json")
    assert snapshot(store) == before


# -- bad configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,text,names", [
    ("wrong-type.toml", 'population = "many"\n', ["population", "many"]),
    ("wrong-nested-type.toml", "[train]\nbatches = -3\n", ["train.batches"]),
    ("unknown-key.toml", "populaton = 8\n", ["populaton"]),
    ("unknown-choice.yaml", "genome: dnaa\n", ["genome", "dnaa"]),
    ("broken.yaml", "population: [1, 2\nsteps: }\n", ["broken.yaml", "does not parse"]),
    ("broken.toml", "population = \n", ["broken.toml", "does not parse"]),
    ("list.yaml", "- 1\n- 2\n", ["list.yaml"]),
    ("wrong.ini", "population=3\n", ["wrong.ini"]),
    ("bad-option.toml", '[genome_options]\ncolour = "red"\n', ["bad-option.toml", "genome_options.colour"]),
    ("bad-gcnn-option.yaml", "genome: gcnn\ngenome_options:\n  q_m: 2\n", ["genome_options.q_m", "2"]),
])
def test_bad_config_file_is_one_line_naming_the_field(tmp_path, name, text, names):
    config = tmp_path / name
    config.write_text(text)
    store = tmp_path / "store"
    one_line_error(invoke("run", "--executor", "local", "--config", config, "--store", store,
                          "--fitness", "synthetic"), *names)
    assert not store.exists()


@pytest.mark.parametrize("genome,options,named", [
    ("dna", {"colour": "red"}, "genome_options.colour: unknown option"),
    ("dna", {"mutation_weights": {"insert-convolutoin": 2}},
     "genome_options.mutation_weights.insert-convolutoin"),
    ("gcnn", {"nodes": [3, 1]}, "genome_options.nodes[1]"),
    ("gcnn", {"depth": 3}, "genome_options.depth: unknown"),
])
def test_genome_options_are_checked_when_the_config_is_built(tmp_path, genome, options, named):
    from evolve.config import ConfigError, build_config

    with pytest.raises(ConfigError) as caught:
        build_config({"genome": genome, "genome_options": options}, "run.toml")
    assert str(caught.value).startswith("run.toml: ") and named in str(caught.value)
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"genome": genome, "genome_options": options}))
    store = tmp_path / "store"
    result = invoke("run", "--executor", "local", "--config", config, "--store", store,
                    "--fitness", "synthetic")
    assert result.exit_code == 2
    one_line_error(result, named.split(":")[0])
    assert not store.exists()


def test_log_level_info_shows_the_workers_lines_and_writes_the_log_file(tmp_path):
    log_file = tmp_path / "run.log"
    result = invoke("run", "--executor", "local", "--store", tmp_path / "run", "--fitness", "synthetic",
                    "--population", "4", "--steps", "4", "--workers", "2", "--log-level", "info",
                    "--log-file", log_file)
    assert result.exit_code == 0, result.stderr
    for text in (result.stderr, log_file.read_text()):
        assert sum("INFO evolve.engine.worker: worker local-" in x and "started" in x for x in text.splitlines()) == 2
    quiet = invoke("run", "--executor", "local", "--store", tmp_path / "quiet", "--fitness", "synthetic",
                   "--population", "4", "--steps", "4")
    assert "INFO" not in quiet.stderr, "warnings and errors only by default"


def test_an_actors_line_buffer_hands_over_every_line_once_and_says_what_a_flood_lost():
    import logging

    from evolve.runner.logsetup import KEPT_LINES, LineBuffer

    buffer = LineBuffer.install(logging.INFO, "ray-7-1")
    try:
        log = logging.getLogger("evolve.engine.worker")
        for i in range(KEPT_LINES + 5):
            log.info("line %d", i)
        first = buffer.take()
        assert "5 earlier log lines dropped" in first[0]["msg"] and len(first) == KEPT_LINES + 1
        assert first[1]["msg"] == "[ray-7-1] line 5" and first[-1]["msg"] == f"[ray-7-1] line {KEPT_LINES + 4}"
        log.info("worker ray-7-1 finished")
        assert [x["msg"] for x in buffer.take()] == ["worker ray-7-1 finished"], "no prefix twice, no line twice"
        assert buffer.take() == []
    finally:
        logging.getLogger("evolve").removeHandler(buffer)
        logging.getLogger("evolve").setLevel(logging.NOTSET)


def test_bad_log_options_are_one_line(tmp_path):
    one_line_error(invoke("run", "--executor", "local", "--store", tmp_path / "a", "--fitness", "synthetic",
                          "--log-level", "loud"), "--log-level", "loud")
    one_line_error(invoke("run", "--executor", "local", "--store", tmp_path / "b", "--fitness", "synthetic",
                          "--log-file", tmp_path / "no" / "such" / "x.log"), "--log-file")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    import logging

    evolve_logger = logging.getLogger("evolve")
    assert evolve_logger.propagate and not evolve_logger.handlers, "a refused --log-file changes no logging"


@pytest.mark.parametrize("args,names", [
    (["run", "--selection", "foo"], ["--selection", "'foo'", "tournament", "run --help"]),
    (["run", "--genome", "foo"], ["genome", "'foo'"]),
    (["run", "--executor", "threads"], ["--executor", "'threads'", "local"]),
    (["run", "--workers", "many"], ["--workers"]),
    (["run", "--no-such-option"], ["--no-such-option"]),
    (["finalize", "somewhere", "--start", "middle"], ["--start", "'middle'", "scratch"]),
    (["export-model", "somewhere", "out", "--model", "worst"], ["--model", "'worst'"]),
    (["status"], ["STORE"]),
])
def test_every_bad_value_choices_included_is_one_line(tmp_path, args, names):
    one_line_error(invoke(*args), *names)


def test_missing_config_file_is_one_line(tmp_path):
    one_line_error(invoke("run", "--executor", "local", "--config", tmp_path / "nope.toml"), "nope.toml")


def test_conflicting_run_leaves_the_store_alone(finished, tmp_path):
    before = snapshot(finished)
    one_line_error(invoke("run", "--executor", "local", "--store", finished, "--fitness", "synthetic",
                          "--population", "7"), "population")
    assert snapshot(finished) == before


def test_missing_dataset_is_one_line_and_leaves_no_folder(tmp_path):
    store = tmp_path / "new" / "store"
    one_line_error(invoke("run", "--executor", "local", "--store", store, "--dataset", "mnist:/nonexistent",
                          "--population", "2", "--steps", "0"), "/nonexistent")
    assert not (tmp_path / "new").exists(), "a refused run leaves no folder behind"


def test_a_refused_run_keeps_a_folder_the_user_made(tmp_path):
    store = tmp_path / "mine"
    (store / "notes").mkdir(parents=True)
    one_line_error(invoke("run", "--executor", "local", "--store", store, "--dataset", "cifar10:/nonexistent"),
                   "/nonexistent")
    assert (store / "notes").is_dir() and not (store / "run.json").exists()


def test_unknown_dataset_is_one_line(tmp_path):
    store = tmp_path / "store"
    result = invoke("run", "--executor", "local", "--store", store, "--dataset", "imagenet")
    one_line_error(result, "imagenet")
    assert not (store / "run.json").exists()


# -- resume with a different length -------------------------------------------------------------------

def test_resume_can_extend_a_run_but_not_shrink_it(finished, tmp_path):
    import shutil

    store = tmp_path / "extended"
    shutil.copytree(finished, store)
    before = snapshot(store)
    one_line_error(invoke("resume", store, "--executor", "local", "--steps", "4"), "steps", "10", "4")
    assert snapshot(store) == before

    result = invoke("resume", store, "--executor", "local", "--steps", "14")
    assert result.exit_code == 0, result.output + result.stderr
    assert "20/20 individuals, 6 live" in result.output
    # the extension is part of the run now: status, check and a plain resume all see 14 steps
    assert "20/20 individuals (0 in flight)" in invoke("status", store).output
    result = invoke("check", store)
    assert result.exit_code == 0 and "ok (finished)" in result.output, result.output + result.stderr
    result = invoke("resume", store, "--executor", "local")
    assert result.exit_code == 0 and "20/20 individuals" in result.output
    assert len(list((store / "individuals").glob("*.json"))) == 20


def test_progress_without_a_terminal_is_plain_lines(tmp_path, capsys):
    """In a log or pipe (no terminal) the run prints plain progress lines, not a rich bar."""
    store = synthetic_run(tmp_path, population=4, steps=6)
    result = invoke("status", store)
    assert result.exit_code == 0
    run = invoke("resume", store, "--executor", "local", "--steps", "8")
    assert run.exit_code == 0, run.output + run.stderr
    assert "evolving: 12/12 individuals (100%)" in run.stderr and "━" not in run.stderr

    from evolve.cli.console import LogProgress

    lines = LogProgress(total=100, every=0.0)
    lines.update(10)
    lines.update(40)
    out = capsys.readouterr().err
    assert "evolving: 10/100 individuals (10%)" in out and "evolving: 40/100 individuals (40%)" in out
    assert "left" not in out  # no estimate before the rate has a minute of history (Eta)


# the default demo's progress as measured (seconds since the search began, individuals done; 2026-12-06)
DEMO_PROGRESS = [(0, 0), (30, 34), (60, 64), (90, 88), (120, 104), (150, 121), (180, 138), (210, 154), (240, 170),
                 (270, 184), (300, 197), (331, 214), (361, 227), (391, 240), (421, 251), (451, 264), (481, 276),
                 (512, 288), (523, 292)]


def _left(text: str) -> float:
    import re

    m = re.search(r"(?:(\d+)m)?(\d+)s left", text)
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def test_the_estimate_follows_the_recent_rate_and_says_at_least_while_the_run_slows():
    """Replaying the demo: the mean rate would promise 24% too little at half-way; the recent rate, 12%,
    and it says "at least" as the steps get dearer; nothing before a minute. At a steady rate it is exact and
    says "about"."""
    from evolve.cli.console import Eta

    eta, end = Eta(292), DEMO_PROGRESS[-1][0]
    texts = {t: eta(done, now=float(t)) for t, done in DEMO_PROGRESS}
    half = texts[210]  # 154 of 292 done
    assert half.startswith(", at least") and -0.15 <= (210 + _left(half) - end) / end <= 0
    mean_rate_total = 210 + (292 - 154) / (154 / 210)
    assert abs(210 + _left(half) - end) < abs(mean_rate_total - end) / 1.8
    assert texts[end] == texts[0] == texts[30] == "" and texts[60].startswith(", at least")

    steady = Eta(100)
    lines = [steady(done, now=2.0 * done) for done in range(0, 60)]
    assert lines[-1] == ", about 1m22s left" and lines[40] == ", about 2m00s left" and lines[29] == ""

    stalled = Eta(100)  # nothing finishes for a while: the rate falls, the estimate stays and grows
    for t, done in [(0, 0), (30, 30), (60, 50)]:
        stalled(done, now=float(t))
    later = [stalled(50, now=float(t)) for t in (90, 150, 400)]
    assert all(text.startswith(", at least") for text in later), later
    assert _left(later[0]) < _left(later[1]) < _left(later[2])
