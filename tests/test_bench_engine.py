"""The engine benchmarks' smoke modes, and the incremental population view they led to.

The view (``Population.refresh``) reads only what is new, so its cost does not grow with the
population: a local store is probed key by key, object stores are listed from where the view
stopped. These tests check that the view it builds is the store's truth (live = individuals
minus tombstones) on each kind of backend, through in-flight steps, adoption and a resume,
and that a refresh after the first reads a handful of records, not the population.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # bench/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(REPO))

from bench.common import moto_server, s3_client, s3_options
from evolve.config import build_config
from evolve.engine.population import Population
from evolve.engine.worker import Worker
from evolve.runner.launch import open_run, run_in_process, total_steps
from evolve.store.backend import Store
from evolve.store.keys import individual_key, selection_key, step_of

BUCKET = "evolve-test-bench-engine"


@pytest.fixture(scope="module")
def moto_endpoint():
    with moto_server([BUCKET]) as endpoint:
        yield endpoint


def store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, dict]:
    if kind == "file":
        return str(tmp_path / "run"), {}
    if kind == "memory":
        return f"memory://bench-{uuid.uuid4().hex}/run", {}
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}", s3_options(endpoint)


def truth(store: Store) -> dict[int, float]:
    """Live individuals by a full listing: every child minus every tombstone, with fitness."""
    dead = {step_of(k) for k in store.list_keys("deaths/")}
    return {step_of(k): float(store.read_json(k)["fitness"]) for k in store.list_keys("individuals/")
            if step_of(k) not in dead}


def seen(pop: Population) -> dict[int, float]:
    return {m.step: m.fitness for m in pop.live()}


@pytest.mark.parametrize("kind", ["file", "memory", "s3"])
def test_incremental_view_is_the_stores_truth(kind, tmp_path, request):
    url, options = store_url(kind, tmp_path, request)
    short = build_config({"store": url, "storage_options": options, "fitness": "synthetic", "population": 6,
                          "steps": 10, "workers": 2, "refresh_seconds": 0.0, "lease_seconds": 0.5})
    store, short, space = open_run(short)
    longer = short.model_copy(update={"steps": 20})
    observer = Population(store, longer.population, total_steps(longer), "observer", 0.5, 0.0)
    assert observer._listing == (kind != "file")  # one listing across log folders on a remote store
    observer.refresh(force=True)
    assert seen(observer) == truth(store) == {}

    run_in_process(store, short, space)
    observer.refresh(force=True)
    assert seen(observer) == truth(store) and len(truth(store)) == short.population
    assert not observer.finished()

    store, longer, space = open_run(longer, resume=True, overrides={"steps": 20})
    crashed = Worker(store, longer, space, worker_id="crashed")
    crashed.population.refresh(force=True)
    step = crashed.population.claim_next()
    crashed.population.settle_selection(step, crashed.breeder.chooser(step))  # killed its loser, then "died"
    loser = store.read_json(selection_key(step, 0))["loser"]
    observer.refresh(force=True)
    assert loser not in seen(observer)  # learnt from the kill's log mark, before the step's child exists
    assert seen(observer) == truth(store) and len(truth(store)) == longer.population - 1

    stats = run_in_process(store, longer, space)
    assert sum(s["adopted"] for s in stats) == 1
    observer.refresh(force=True)
    assert seen(observer) == truth(store) and len(truth(store)) == longer.population
    assert observer.finished()


@pytest.mark.parametrize(("kind", "population"), [("file", 60), ("s3", 20)])
def test_refresh_reads_only_what_is_new(kind, population, tmp_path, request):
    """After joining, a refresh lists the log after the watermark (one listing; a folder per block in use
    locally) and reads no record."""
    url, options = store_url(kind, tmp_path, request)
    config = build_config({"store": url, "storage_options": options, "fitness": "synthetic", "population": population,
                           "steps": 4, "workers": 4, "refresh_seconds": 0.0})
    store, config, space = open_run(config)
    run_in_process(store, config.model_copy(update={"steps": 2}), space)
    observer = Population(store, config.population, total_steps(config), "observer", 60.0, 0.0)
    observer.refresh(force=True)
    assert len(observer.view.done) == config.population + 2
    assert observer.view.individuals == {}, "joining read records it does not need"

    calls: dict[str, int] = {"list_keys": 0, "list_keys_after": 0, "list_folder": 0, "list_names": 0, "read_json": 0,
                             "read_bytes": 0}
    def counting(name):
        real = getattr(store, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return counted

    for name in calls:
        setattr(store, name, counting(name))
    worker = Worker(store, config, space, worker_id="other")
    worker.population.refresh(force=True)
    worker.run_step(worker.population.claim_next())
    calls.update(dict.fromkeys(calls, 0))
    observer.refresh(force=True)
    # S3: one listing after the watermark; a folder: log/ (the blocks in use), then the one block in use
    listings = calls["list_keys"] + calls["list_keys_after"] + calls["list_folder"] + calls["list_names"]
    assert listings == (2 if kind == "file" else 1), calls
    assert calls["read_json"] + calls["read_bytes"] == 0, calls
    assert seen(observer) == truth(store)


@pytest.mark.slow
def test_s3_list_keys_after_pages_past_1000_keys(moto_endpoint):
    store = Store.open(f"s3://{BUCKET}/after-{uuid.uuid4().hex}", s3_options(moto_endpoint), create=True)
    client = s3_client(moto_endpoint)
    base = store.url.removeprefix(f"s3://{BUCKET}/")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"{base}/c/{i:05d}", Body=b"x"), range(1050)))
    client.put_object(Bucket=BUCKET, Key=f"{base}/cx/00001", Body=b"x")  # same leading letters, other folder
    keys = store.list_keys_after("c/", "c/00020")
    assert keys == [f"c/{i:05d}" for i in range(21, 1050)]
    assert store.list_keys_after("c/", "c/") == store.list_keys("c/")


# -- the benchmarks' smoke modes (in this process: no second torch import) ---------------------------


def run_script(module, capsys) -> str:
    assert module.main(["--smoke"]) == 0
    return capsys.readouterr().out


def table_rows(output: str, which: int = 0) -> list[dict[str, str]]:
    """The rows of the output's ``which``-th markdown table."""
    tables, lines = [], []
    for line in output.splitlines() + [""]:
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            tables.append(lines)
            lines = []
    lines = tables[which]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


def test_overhead_smoke_prints_a_sane_table(capsys):
    from bench import overhead

    assert overhead.main(["--smoke"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("command: python3 bench/overhead.py --smoke")
    assert re.search(r"^machine: \d+ cores", out, re.MULTILINE) and re.search(r"^versions: python 3", out, re.MULTILINE)
    rows = table_rows(out)
    backends = ["file", "tmpfs", "s3 (moto)"] if os.path.isdir(overhead.TMPFS) else ["file", "s3 (moto)"]
    assert [(r["backend"], r["P"]) for r in rows] == [(b, p) for b in backends for p in ("10", "20")]
    create_ms = float(re.search(r"^one create-once record on this disk .*: ([\d.]+) ms mean", out, re.MULTILINE)[1])
    assert 0 < create_ms < 10_000
    for r in rows:
        mean, p50, p95 = number(r["overhead mean ms"]), number(r["p50 ms"]), number(r["p95 ms"])
        assert 0 < p50 <= p95 < 60_000 and 0 < mean < 60_000, r
        parts = sum(number(r[c]) for c in ("refresh ms", "claim ms", "select+read ms"))
        assert parts <= mean * 1.01 + 0.05, r  # the parts are inside the whole (the write is behind training)
        assert number(r["write ms"]) > 0, r
        assert number(r["% of demo step"]) > 0 and r["check"] == "yes", r
    assert re.search(r"^file: overhead at P=20 / P=10 = [\d.]+x", out, re.MULTILINE)
    assert "check_store: every store passes" in out
    if importlib.util.find_spec("optuna") is None:
        assert "optuna is not installed" in err
        return
    peers = table_rows(out, which=1)  # the peer on the same disk, then the engine's file rows again
    assert [(r["what"], r["P"]) for r in peers] == [
        *((f"optuna journal file, {n} params", p) for p in ("10", "20") for n in (0, 4)),
        ("evolve file (dna), per step", "10"), ("evolve file (dna), per step", "20")]
    for r in peers:
        assert 0 < number(r["p50 ms"]) <= number(r["p95 ms"]) < 60_000, r


def test_overhead_measures_genetic_cnn_and_optuna_over_the_same_space(tmp_path):
    """--genome gcnn times the engine's Genetic CNN steps; --optuna-params space declares that genome's
    default space in Optuna, a 0/1 parameter per connection bit (3 + 6 + 10 for stages of 3, 4, 5 nodes)."""
    from bench import overhead

    args = overhead.parse_args(["--genome", "gcnn", "--optuna-params", "0,space"])
    assert args.genome == "gcnn" and args.optuna_params == [0, "space"]
    with pytest.raises(SystemExit):  # the space is Genetic CNN's: not beside a DNA run
        overhead.parse_args(["--optuna-params", "space"])
    with pytest.raises(SystemExit):
        overhead.parse_args(["--optuna-params", "4,bits"])
    weights = bytes(64)
    row = overhead.measure("file", str(tmp_path / "gcnn"), {}, 4, 3, 1, 2, overhead.InstantEvaluator(weights),
                           0.001, genome="gcnn")
    assert row.check_ok and len(row.timed.overhead_ms) == 3
    record = Store(str(tmp_path / "gcnn")).read_json(individual_key(4))
    assert record["genome"]["kind"] == "gcnn" and record["origin"] == "mutation"
    if importlib.util.find_spec("optuna") is None:
        return
    peer = overhead.optuna_cost(tmp_path / "optuna", 3, 2, 0, "space", 0.0)
    assert peer.what == "optuna journal file, Genetic CNN's space (19 bits)" and len(peer.ms) == 2
    assert len(overhead.gcnn_bits()) == 19


def test_scaling_smoke_prints_a_sane_table(capsys):
    from bench import scaling

    out = run_script(scaling, capsys)
    assert out.startswith("command: python3 bench/scaling.py --smoke")
    rows = table_rows(out)
    assert [r["workers"] for r in rows] == ["1", "2"]
    for r in rows:
        assert number(r["ideal steps/s"]) == pytest.approx(int(r["workers"]) / 0.1)
        # each step sleeps the fitness duration, so no worker can beat the ideal
        assert 5 < number(r["efficiency"]) <= 100.5, r
        assert number(r["children timed"]) >= 3 * int(r["workers"]) and r["check"] == "yes", r
    assert "check_store: every store passes" in out


def test_paper_scale_smoke_is_exact_under_both_checks(capsys):
    from bench import paper_scale

    out = run_script(paper_scale, capsys)
    assert out.startswith("command: python3 bench/paper_scale.py --smoke")
    (row,) = table_rows(out)
    assert (row["workers"], row["population"], row["steps"]) == ("8", "20", "60")
    assert 0.05 < number(row["efficiency"]) <= 1.005, row  # every step sleeps: nobody beats the ideal
    assert row["check"] == "clean" and row["raw_check"] == "clean", row
    assert number(row["requests_per_step"]) > 0
    assert row["parent weights missing"] == "0" and 0 < number(row["peak weight files"]), row


def test_the_raw_check_sees_a_second_death_at_one_step(tmp_path):
    """The simulation's independent check is itself checked: a forged second tombstone is reported."""
    from bench.paper_scale import raw_violations

    config = build_config({"store": str(tmp_path / "run"), "fitness": "synthetic", "population": 4, "steps": 6,
                           "workers": 1, "refresh_seconds": 0.0})
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    assert raw_violations(store, 4, 10) == []
    live = sorted(set(range(10)) - {step_of(k) for k in store.list_keys("deaths/")})
    store.create_json(f"deaths/{live[0]:012d}.json", {"step": live[0], "killed_at_step": 9, "attempt": 1})
    problems = raw_violations(store, 4, 10)
    assert any("step 9 killed 2" in p for p in problems) and any("3 live" in p for p in problems), problems


def test_joining_a_store_of_many_log_folders_sees_every_step(tmp_path):
    """A worker joining a local store whose log spans several folders learns every finished step at once."""
    from evolve.store.keys import LOG_BLOCK

    config = build_config({"store": str(tmp_path / "run"), "fitness": "synthetic", "population": 2 * LOG_BLOCK + 7,
                           "steps": 3, "workers": 1, "refresh_seconds": 0.0})
    store, config, space = open_run(config)
    run_in_process(store, config.model_copy(update={"steps": 0}), space)
    observer = Population(store, config.population, total_steps(config), "observer", 60.0, 0.0)
    observer.refresh(force=True)
    assert len(observer.view.done) == config.population
    assert observer.claim_next() == config.population
