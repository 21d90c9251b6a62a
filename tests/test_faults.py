"""Faults from outside: `evolve run` killed with SIGKILL (twice in a row) or stopped by Ctrl-C, then resumed.

The store alone must be enough: `evolve resume` adopts the steps that were in flight,
the run ends with exactly N + steps individuals, N live, and `evolve check` clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolve.check import check_store
from evolve.cli import app
from evolve.report import Snapshot
from evolve.store import Store

pytestmark = pytest.mark.slow

POPULATION, STEPS = 8, 150


def write_config(tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(f'store = "{store}"\nfitness = "synthetic"\nsynthetic_seconds = 0.02\n'
                      f"population = {POPULATION}\nsteps = {STEPS}\nworkers = 2\n"
                      "lease_seconds = 1.0\nrefresh_seconds = 0.1\n")
    return config, store


def evolve(*args: object) -> subprocess.Popen:
    """`python -m evolve.cli ARGS` as a child process (its own session: a signal reaches only it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "evolve.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def count(store: Path) -> int:
    folder = store / "individuals"
    return sum(1 for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else 0


def signal_when(proc: subprocess.Popen, store: Path, at_least: int, sig: int, timeout: float = 90.0) -> int:
    """Send ``sig`` to ``proc`` once the store holds ``at_least`` individuals; the count at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count(store)
        if n >= at_least:
            os.kill(proc.pid, sig)
            return n
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"evolve exited ({proc.returncode}) before {at_least} individuals:\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"fewer than {at_least} individuals after {timeout} s")


def in_flight(store: Path) -> set[int]:
    snap = Snapshot.read(Store.open(str(store)))
    return snap.claims - set(snap.individuals)


def assert_consistent_mid_run(store: Path) -> None:
    """Right after a stop or kill the invariants already hold: live = N - steps in flight."""
    report = check_store(Store.open(str(store)), POPULATION, POPULATION + STEPS)
    assert report.ok, report.violations
    assert report.live == POPULATION - report.in_flight


def assert_finished_and_clean(store: Path) -> Snapshot:
    result = CliRunner().invoke(app, ["check", str(store)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "ok (finished)" in result.output
    st = Store.open(str(store))
    report = check_store(st, POPULATION, POPULATION + STEPS)
    assert report.ok, report.violations
    assert report.individuals == POPULATION + STEPS and report.live == POPULATION
    return Snapshot.read(st)


def resume_in_process(store: Path) -> None:
    result = CliRunner().invoke(app, ["resume", str(store), "--executor", "local"])
    assert result.exit_code == 0, result.output + result.stderr + repr(result.exception)
    assert f"{POPULATION + STEPS}/{POPULATION + STEPS} individuals, {POPULATION} live" in result.output


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
    assert not in_flight(store), "Ctrl-C should let the steps in flight finish"
    resume_in_process(store)
    assert_finished_and_clean(store)
