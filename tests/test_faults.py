"""Faults from outside: `evolve run` killed with SIGKILL (twice, or ten times in a row), stopped by Ctrl-C,
or frozen with SIGSTOP past its lease while a second process works the same store (a zombie), then resumed.

The store alone must be enough: `evolve resume` adopts the steps that were in flight,
the run ends with exactly N + steps individuals, N live, and `evolve check` clean.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from inflight import holders
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.store.backend import Store
from evolve.store.check import check_store
from evolve.store.keys import PAD, claim_key, individual_key, step_of
from evolve.store.marks import selections_of
from evolve.store.snapshot import Snapshot

pytestmark = pytest.mark.slow

POPULATION, STEPS = 8, 150


def write_config(tmp_path: Path, **settings: object) -> tuple[Path, Path]:
    """A TOML config for a synthetic run in ``tmp_path/run``; ``settings`` override the defaults."""
    store = tmp_path / "run"
    values = {"store": str(store), "fitness": "synthetic", "synthetic_seconds": 0.02, "population": POPULATION,
              "steps": STEPS, "workers": 2, "lease_seconds": 1.0, "refresh_seconds": 0.1, **settings}
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items() if k not in tables]
    for name, table in tables.items():
        lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    config = tmp_path / "run.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, store


# Ctrl-C as a terminal delivers it: a suite run as a background job (`pytest &`) ignores SIGINT, its children
# inherit that, and Python then keeps ignoring it rather than raising KeyboardInterrupt
CLI = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "sys.argv[0] = 'evolve'; runpy.run_module('evolve.cli', run_name='__main__', alter_sys=True)")


def evolve(*args: object) -> subprocess.Popen:
    """`python -m evolve.cli ARGS` as a child process (its own session: a signal reaches only it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def count(store: Path) -> int:
    folder = store / "individuals"
    return sum(1 for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else 0


def wait_until(condition, what: str, procs: tuple[subprocess.Popen, ...] = (), timeout: float = 90.0):
    """Poll ``condition()`` until it returns something truthy; fail if a process in ``procs`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"evolve exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.02)
    for proc in procs:
        proc.kill()
    pytest.fail(f"no {what} after {timeout} s")


def signal_when(proc: subprocess.Popen, store: Path, at_least: int, sig: int, timeout: float = 90.0,
                delay: float = 0.0) -> int:
    """Send ``sig`` to ``proc`` ``delay`` s after the store holds ``at_least`` individuals; the count then."""
    wait_until(lambda: count(store) >= at_least, f"{at_least} individuals", (proc,), timeout)
    time.sleep(delay)
    os.kill(proc.pid, sig)
    return count(store)


def in_flight(store: Path) -> set[int]:
    snap = Snapshot.read(Store.open(str(store)))
    return snap.claims - set(snap.individuals)


def assert_consistent_mid_run(store: Path, population: int = POPULATION, steps: int = STEPS) -> None:
    """Right after a stop or kill the invariants already hold: live = N - steps in flight."""
    report = check_store(Store.open(str(store)), population, population + steps)
    assert report.ok, report.violations
    assert report.live == population - report.in_flight


def assert_finished_and_clean(store: Path, population: int = POPULATION, steps: int = STEPS) -> Snapshot:
    result = CliRunner().invoke(app, ["check", str(store)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "ok (finished)" in result.output
    st = Store.open(str(store))
    report = check_store(st, population, population + steps)
    assert report.ok, report.violations
    assert report.individuals == population + steps and report.live == population
    return Snapshot.read(st)


def finished_line(population: int = POPULATION, steps: int = STEPS) -> str:
    return f"{population + steps}/{population + steps} individuals, {population} live"


def resume_in_process(store: Path, population: int = POPULATION, steps: int = STEPS) -> None:
    result = CliRunner().invoke(app, ["resume", str(store), "--executor", "local"])
    assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    assert finished_line(population, steps) in result.output


def test_sigkill_twice_then_resume(tmp_path):
    """SIGKILL `evolve run`, then SIGKILL the `evolve resume` that follows; a last resume finishes exactly."""
    config, store = write_config(tmp_path)
    abandoned: set[int] = set()

    proc = evolve("run", "--executor", "local", "--config", config)
    first = signal_when(proc, store, POPULATION + 20, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    abandoned |= in_flight(store)
    assert_consistent_mid_run(store)

    proc = evolve("resume", store, "--executor", "local")
    second = signal_when(proc, store, max(count(store), first) + 30, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert second < POPULATION + STEPS, "the resume finished before it could be killed"
    abandoned |= in_flight(store)
    assert_consistent_mid_run(store)
    assert abandoned, "no step was in flight at either kill"

    resume_in_process(store)
    snap = assert_finished_and_clean(store)
    for step in abandoned:  # a step claimed by a killed process is finished by adoption, never redone
        assert snap.individuals[step]["adopted"], f"step {step} was in flight at a kill but not adopted"


def test_ctrl_c_stops_with_130_then_resume_finishes(tmp_path):
    config, store = write_config(tmp_path)
    proc = evolve("run", "--executor", "local", "--config", config)
    at = signal_when(proc, store, POPULATION + 20, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out}\n{err}"
    assert "interrupted" in err and "evolve resume" in err, err
    assert "Traceback" not in out + err, err
    stopped_at = count(store)
    assert at <= stopped_at < POPULATION + STEPS
    assert_consistent_mid_run(store)
    assert_only_claimed_as_stopped_are_in_flight(store)  # Ctrl-C lets the steps being trained finish
    resume_in_process(store)
    assert_finished_and_clean(store)


def assert_only_claimed_as_stopped_are_in_flight(store: Path) -> set[int]:
    """After a stop with a grace, a step still in flight is one a worker claimed as the stop came: given up at
    once with a note (evolve/engine/worker.py), never trained, adopted at once by the resume."""
    given_up = in_flight(store)
    notes = {int(p.name.split(".")[0].split("-")[0]) for p in (store / "heartbeats").glob("*.released.json")}
    assert notes == given_up, (given_up, notes)
    return given_up


def the_one_line(err: str) -> str:
    """The single line `evolve run` prints when stopped (the store line it starts with aside): no traceback,
    no C++ dump from Ray's own SIGTERM handler."""
    assert "Traceback" not in err and "SIGTERM received" not in err and "***" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("store ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("sig", "grace"), [(signal.SIGTERM, 0), (signal.SIGHUP, 10)])
def test_sigterm_and_sighup_stop_the_run_as_ctrl_c_does(tmp_path, sig, grace):
    """SIGTERM (docker, Kubernetes, SLURM, a preempted node) or SIGHUP mid-search: exit 128 + the signal and
    one line; a step still training when the grace ends is given up, and the resume finishes exactly."""
    population, steps = 6, 30
    config, store = write_config(tmp_path, synthetic_seconds=0.3, steps=steps, population=population,
                                 lease_seconds=600.0)
    proc = evolve("run", "--executor", "local", "--config", config, "--grace", grace)
    signal_when(proc, store, population + 6, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}\n{out}\n{err}"
    line = the_one_line(err)
    name = signal.Signals(sig).name
    assert line.startswith(f"stopped by {name}: {count(store)}/{population + steps} individuals in the store")
    assert line.endswith(f"`evolve resume {store}` continues the run")
    if grace:
        given_up = assert_only_claimed_as_stopped_are_in_flight(store)
        assert "given up" not in line, "the grace let the steps being trained finish"
    else:
        given_up = in_flight(store)
        assert given_up and f"step{'s' if len(given_up) > 1 else ''} {', '.join(map(str, sorted(given_up)))} " \
                            "still training after the 0 s grace given up" in line, line
        assert {p.name for p in (store / "heartbeats").iterdir()} == {f"{s:012d}.released.json" for s in given_up}
    assert_consistent_mid_run(store, population, steps)
    resume_in_process(store, population, steps)
    snap = assert_finished_and_clean(store, population, steps)
    assert all(snap.individuals[s]["adopted"] for s in given_up)
    assert not list(store.glob("heartbeats/*")), "a given-up step's note outlived its adoption"


def test_sigterm_under_ray_exits_143_with_one_line_and_a_lost_worker_is_one_line_of_ours(tmp_path):
    """Under Ray too: a SIGKILLed actor is reported as one line of evolve's own (not Ray's OOM guess, which
    goes to the log file), SIGTERM to the driver ends the run with 143 and one line, and it resumes exactly."""
    population, steps = 4, 40
    config, store = write_config(tmp_path, synthetic_seconds=0.4, steps=steps, population=population,
                                 lease_seconds=600.0)
    log_file = tmp_path / "run.log"
    proc = evolve("run", "--executor", "ray", "--config", config, "--grace", 0, "--log-file", log_file)
    wait_until(lambda: count(store) >= population + 2, "some children", (proc,), timeout=120)
    st = Store.open(str(store))
    step = min(holders(st))
    pid = st.read_json(claim_key(step))["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: log_file.exists() and "died holding" in log_file.read_text(), "the lost worker's line", (proc,),
               timeout=60)
    # a worker process given SIGTERM (its node is going away) gives its step up (grace 0 here) and says so
    wait_until(lambda: any(s != step for s in holders(st)), "a step held by a worker", (proc,), timeout=60)
    termed = min(s for s in holders(st) if s != step)
    os.kill(st.read_json(claim_key(termed))["pid"], signal.SIGTERM)
    wait_until(lambda: f"got SIGTERM and gave up step {termed}:" in log_file.read_text(), "the SIGTERMed worker's line",
               (proc,), timeout=60)
    signal_when(proc, store, count(store) + 4, signal.SIGTERM, timeout=120)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, f"exit {proc.returncode}\n{out}\n{err}"
    lost = [line for line in err.splitlines() if "died holding" in line or "got SIGTERM" in line]
    assert len(lost) == 2 and f"pid {pid}) died holding step {step} " in lost[0], err
    assert f"got SIGTERM and gave up step {termed}: taken over at once" in lost[1], err
    assert "OOM" not in err and "raylet" not in err, err
    assert "OOM killer" in log_file.read_text(), "Ray's own note belongs in the log file"
    line = the_one_line("\n".join(line for line in err.splitlines() if line not in lost))
    assert line.startswith("stopped by SIGTERM: ") and f"`evolve resume {store}`" in line
    assert_consistent_mid_run(store, population, steps)
    resume_in_process(store, population, steps)
    assert_finished_and_clean(store, population, steps)


def test_a_second_driver_is_announced_joins_and_the_stages_after_the_search_run_once(tmp_path):
    """Two `evolve run` on one store: the second names the first (host, pid, since) and joins it; the run is
    exact, and each stage after the search (the best's final training, LeNet-5) has one claim and one record:
    the reference is trained once, by the driver that claimed it, and both drivers print the same figures."""
    population, steps = 4, 24
    config, store = write_config(tmp_path, fitness="train", dataset="digits", steps=steps, population=population,
                                 workers=1, final_batches=40, train={"batches": 20, "batch_size": 32},
                                 lease_seconds=60.0)
    first = evolve("run", "--executor", "local", "--config", config)
    wait_until(lambda: count(store) >= 2, "the first driver's first individuals", (first,), timeout=120)
    second = evolve("run", "--executor", "local", "--config", config)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    notice = [line for line in outs[1][1].splitlines() if line.startswith("another driver")]
    assert len(notice) == 1 and f"pid {first.pid}, since " in notice[0] and "joins it" in notice[0], outs[1][1]
    assert not [line for line in outs[0][1].splitlines() if line.startswith("another driver")]
    claims = sorted(p.name for p in (store / "results" / "claims").glob("*.json") if ".beat" not in p.name)
    stages = {name.split("-")[0].removesuffix(".json") for name in claims}
    assert {"lenet5", "final"} <= stages and all("-1" not in name.removeprefix("final-") for name in claims), claims
    lenet = json.loads((store / "results" / "lenet5.json").read_text())
    claim = json.loads((store / "results" / "claims" / "lenet5.json").read_text())
    assert lenet["pid"] == claim["pid"] in (first.pid, second.pid)
    reference = [[line for line in out.splitlines() if line.startswith("reference: LeNet-5")] for out, _ in outs]
    assert reference[0] == reference[1] and len(reference[0]) == 1, outs
    assert_finished_and_clean(store, population, steps)


def individual_digests(store: Path, total: int) -> dict[int, str]:
    """Each individual's step -> sha256 of its record; every record names its own step, none beyond the run."""
    st = Store.open(str(store))
    digests = {}
    for key in st.list_keys("individuals/"):
        step, data = step_of(key), st.read_bytes(key)
        assert json.loads(data)["step"] == step, f"{key} records another step"
        assert step < total, f"{key}: beyond the run's {total} steps"
        digests[step] = hashlib.sha256(data).hexdigest()
    return digests


def test_ten_kill_resume_cycles_never_lose_or_redo_a_step(tmp_path):
    """`evolve run`, then `evolve resume` nine times, each SIGKILLed at a random moment; a last resume finishes.

    After every kill the store is consistent mid-run, no individual vanished or changed, and the steps
    in flight are later finished by adoption.
    """
    population, steps = POPULATION, STEPS
    total = population + steps
    config, store = write_config(tmp_path, lease_seconds=3.0)  # longer than a cycle: restarts outpace leases
    rng = random.Random(20170303)
    seen: dict[int, str] = {}
    abandoned: set[int] = set()
    for cycle in range(10):
        proc = (evolve("run", "--executor", "local", "--config", config) if cycle == 0
                else evolve("resume", store, "--executor", "local"))
        target = len(seen) + rng.randint(1, 12)
        signal_when(proc, store, target, signal.SIGKILL, delay=rng.uniform(0.0, 0.05))
        assert proc.wait(timeout=30) == -signal.SIGKILL
        now = individual_digests(store, total)
        assert len(now) >= target
        changed = sorted(s for s, digest in seen.items() if now.get(s) != digest)
        assert not changed, f"cycle {cycle}: individuals {changed} vanished or changed"
        seen = now
        abandoned |= in_flight(store)
        assert_consistent_mid_run(store, population, steps)
    assert len(seen) < total, "the run finished before its tenth kill"
    assert abandoned, "no step was in flight at any kill"

    resume_in_process(store, population, steps)
    snap = assert_finished_and_clean(store, population, steps)
    final = individual_digests(store, total)
    assert all(final[s] == digest for s, digest in seen.items())
    for step in abandoned:
        assert snap.individuals[step]["adopted"], f"step {step} was in flight at a kill but not adopted"


def step_in_training(store: Path, worker: str, population: int) -> int | None:
    """A child step that ``worker`` claimed, heartbeats and has selected for (its loser is dead), with no child yet."""
    st = Store.open(str(store))
    snap = Snapshot.read(st)
    killing = {record["killed_at_step"] for record in snap.deaths.values()}
    held = holders(st)
    for step in sorted((snap.claims - set(snap.individuals)) & killing, reverse=True):
        claim = st.read_json(claim_key(step))
        if step >= population and claim and claim["worker"] == held.get(step) == worker:
            return step
    return None


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state (Linux /proc)."""
    states = [Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
              for tid in os.listdir(f"/proc/{pid}/task")]
    return all(state in "Tt" for state in states)


def freeze_mid_training(proc: subprocess.Popen, store: Path, worker: str, population: int) -> int:
    """SIGSTOP ``proc`` while ``worker`` is training a child; that child's step."""
    for _ in range(50):
        step = wait_until(lambda: step_in_training(store, worker, population), f"a step in training by {worker}",
                          (proc,), timeout=60)
        os.kill(proc.pid, signal.SIGSTOP)
        wait_until(lambda: stopped(proc.pid), f"{worker} stopped", timeout=10)
        if not (store / individual_key(step)).exists():
            return step
        os.kill(proc.pid, signal.SIGCONT)
    pytest.fail(f"{worker} was never caught mid-training")


def records_of_step(st: Store, step: int) -> dict[str, bytes]:
    """The claim (attempt 0's selection rides in it), selections and tombstones of step ``step``, as raw bytes."""
    keys = [claim_key(step)] + st.list_keys(f"selections/{step:0{PAD}d}-")
    keys += [k for k in st.list_keys("deaths/") if st.read_json(k)["killed_at_step"] == step]
    return {key: st.read_bytes(key) for key in keys}


def test_zombie_worker_resumed_after_its_lease_loses_its_step(tmp_path):
    """Process A is frozen (SIGSTOP) mid-training past its lease while process B works the same store.

    B adopts A's step and writes its child; after SIGCONT, A's late child and weights are refused,
    A kills nobody else, goes on working, and both processes finish the run cleanly.
    """
    population, steps, lease = 4, 30, 1.0
    config, store = write_config(tmp_path, population=population, steps=steps, workers=1, lease_seconds=lease,
                                 fitness="train", dataset="digits", train={"batches": 300})
    a = evolve("run", "--executor", "local", "--config", config)
    b = None
    try:
        wait_until(lambda: (store / "run.json").exists(), "run.json", (a,))
        b = evolve("resume", store, "--executor", "local", "--workers", 1)
        a_id, b_id = f"local-0-{a.pid}", f"local-0-{b.pid}"
        st = Store.open(str(store))
        wait_until(lambda: {a_id, b_id} <= set(holders(st).values()), "a step in flight in each process", (a, b))

        step = freeze_mid_training(a, store, a_id, population)
        frozen_at = time.monotonic()
        child = wait_until(lambda: st.read_json(individual_key(step)), f"step {step}'s child", (b,), timeout=60)
        time.sleep(max(0.0, frozen_at + 3 * lease - time.monotonic()))
        assert (child["worker"], child["adopted"]) == (b_id, True), child
        adoptions = [st.read_json(k) for k in st.list_keys(f"adoptions/{step:0{PAD}d}-")]
        assert adoptions and {r["worker"] for r in adoptions} == {b_id}, adoptions
        assert child["weights"], child
        child_bytes, settled = st.read_bytes(individual_key(step)), records_of_step(st, step)
        assert len(selections_of(st, step)) == 1, settled
        assert sum(k.startswith("deaths/") for k in settled) == 1, settled
        assert count(store) <= population + steps - 3, "too few steps left for A to work on after it wakes"
        woke = time.time()
        os.kill(a.pid, signal.SIGCONT)

        for proc in (a, b):
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
            assert finished_line(population, steps) in out, out
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    assert st.read_bytes(individual_key(step)) == child_bytes, "the zombie replaced the adopter's child"
    assert records_of_step(st, step) == settled, "the zombie changed its step's selection or tombstone"
    # the zombie's weights are gone (the child's own may be too, collected once it died)
    assert set(st.list_keys(f"weights/{step:0{PAD}d}")) <= {child["weights"]["key"]}, "the zombie's weights remain"
    snap = assert_finished_and_clean(store, population, steps)
    later = [r for r in snap.individuals.values() if r["worker"] == a_id and r["created_at"] > woke]
    assert later, "the zombie did no work after it woke"


def test_sigkills_while_workers_delete_weights_lose_none_that_is_needed(tmp_path):
    """A real-training run whose workers delete dead weights as they go, SIGKILLed 3 times at seeded moments
    and resumed: every live individual's, every pending parent's and the best keep_best's weights stay."""
    import hashlib

    population, steps, keep_best = 4, 36, 2
    config, store = write_config(tmp_path, fitness="train", dataset="digits", population=population, steps=steps,
                                 lease_seconds=0.5, refresh_seconds=0.0, keep="needed", keep_best=keep_best,
                                 final_batches=0, train={"batches": 3, "batch_size": 16, "eval_batch_size": 500})
    rng = random.Random(3)
    proc = evolve("run", "--executor", "local", "--config", config)
    for kill in range(3):
        signal_when(proc, store, population + 6 + 8 * kill, signal.SIGKILL, delay=rng.uniform(0.0, 0.3))
        proc.wait()
        assert_consistent_mid_run(store, population, steps)
        st = Store.open(str(store))
        snap = Snapshot.read(st)
        needed = set(snap.live())
        for step in snap.claims - set(snap.individuals):  # an adopter will replay its selection
            needed |= {s["parent"] for s in selections_of(st, step)}
        for step in needed:
            record = snap.individuals[step]
            data = st.read_bytes(record["weights"]["key"])
            assert data is not None and hashlib.sha256(data).hexdigest() == record["weights"]["sha256"], step
        proc = evolve("resume", str(store), "--executor", "local")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    snap = assert_finished_and_clean(store, population, steps)
    st = Store.open(str(store))
    ranked = sorted(snap.individuals.values(), key=lambda r: (r["fitness"], -r["step"]), reverse=True)
    for record in [snap.individuals[s] for s in snap.live()] + ranked[:keep_best]:
        data = st.read_bytes(record["weights"]["key"])
        assert data is not None and hashlib.sha256(data).hexdigest() == record["weights"]["sha256"], record["step"]
    left = len(st.list_keys("weights/"))
    assert left < population + steps, "nothing was collected"
