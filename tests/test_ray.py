"""Ray executor: many actors on one small machine, and actors killed with SIGKILL mid-run.

Ray is started locally with 2 CPUs; the workers ask for a quarter CPU each so 8 fit.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from inflight import holders

from evolve.config import build_config
from evolve.runner.launch import open_run, run_on_ray, total_steps
from evolve.store.check import check_store
from evolve.store.snapshot import Snapshot

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _config(tmp_path, **kw):
    base = {"store": str(tmp_path / "run"), "fitness": "synthetic", "population": 32, "steps": 2000,
            "workers": 8, "cpus_per_worker": 0.25, "refresh_seconds": 0.2, "lease_seconds": 1.0}
    base.update(kw)
    return build_config(base)


def _assert_exact_and_clean(store, config):
    report = check_store(store, config.population, total_steps(config))
    assert report.ok, report.violations
    assert report.individuals == config.population + config.steps
    assert report.live == config.population
    assert report.in_flight == 0 and report.finished
    return report


def test_eight_actors_two_thousand_steps(tmp_path, local_ray):
    """8 Ray actors race on one store: every step done once, N live, check clean, in well under 2 min."""
    store, config, space = open_run(_config(tmp_path))
    started = time.perf_counter()
    results = run_on_ray(store, config, space)
    elapsed = time.perf_counter() - started
    _assert_exact_and_clean(store, config)
    assert len(results) == config.workers
    assert sum(r["steps"] for r in results) == config.population + config.steps
    workers = {r["worker"] for r in Snapshot.read(store).individuals.values()}
    assert len(workers) >= 4, f"the work was not spread over the actors: {workers}"
    print(f"\n8 ray actors, {config.population}+{config.steps} synthetic steps: {elapsed:.1f} s")
    assert elapsed < 90, f"took {elapsed:.1f} s"


def _actor_pids(store) -> dict[str, int]:
    """Worker id -> pid of each actor that is holding a step now (ids are ``ray-<i>-<pid>``)."""
    return {worker: int(worker.rsplit("-", 1)[1]) for worker in holders(store).values() if worker.startswith("ray-")}


def test_sigkilled_actors_are_restarted_and_their_steps_adopted(tmp_path, local_ray):
    """SIGKILL two actors mid-step: Ray restarts them, their claimed steps are adopted, the run is exact."""
    config = _config(tmp_path, population=8, steps=120, workers=4, synthetic_seconds=0.05, lease_seconds=1.0,
                     refresh_seconds=0.1)
    store, config, space = open_run(config)
    killed: list[tuple[str, int]] = []
    done = threading.Event()

    def killer() -> None:
        while not done.is_set() and len(killed) < 2:
            n = len(store.list_keys("individuals/"))
            if n >= config.population + 10 * (len(killed) + 1):
                candidates = [(w, p) for w, p in _actor_pids(store).items() if (w, p) not in killed]
                for worker, pid in candidates:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append((worker, pid))
                    break
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        results = run_on_ray(store, config, space)
    finally:
        done.set()
        thread.join()
    assert len(killed) == 2, f"killed only {killed}"
    _assert_exact_and_clean(store, config)
    snap = Snapshot.read(store)
    adopted = [s for s, r in snap.individuals.items() if r.get("adopted")]
    assert adopted, "no step of a killed actor was adopted"
    # Ray restarted each killed actor and retried its run(): every actor's result comes back, and a
    # killed actor's result is its new incarnation's (same name, a pid we did not kill)
    assert len(results) == config.workers
    by_name = {r["worker"].rsplit("-", 1)[0]: int(r["worker"].rsplit("-", 1)[1]) for r in results}
    assert sorted(by_name) == [f"ray-{i}" for i in range(config.workers)]
    for worker, pid in killed:
        name = worker.rsplit("-", 1)[0]
        assert by_name[name] not in {p for w, p in killed if w.startswith(name + "-")}, \
            f"actor {name}'s run() returned from a process we killed"


def test_steps_trained_in_ray_actors_replay_byte_for_byte_in_process(tmp_path, local_ray):
    """Real training (digits, 8 batches a child) in 2 actors; every step replayed here gives its weights."""
    from test_reproducible import replays, stored_weights

    config = build_config({"store": str(tmp_path / "run"), "dataset": "digits", "population": 4, "steps": 4,
                           "workers": 2, "cpus_per_worker": 0.5, "train": {"batches": 8, "device": "cpu"},
                           "final_batches": 0, "keep": "all", "refresh_seconds": 0.0})
    store, config, space = open_run(config)
    run_on_ray(store, config, space)
    recorded = stored_weights(store)
    assert len(recorded) == 8
    assert {r["worker"].split("-")[0] for r in Snapshot.read(store).individuals.values()} == {"ray"}
    again = replays(store, config, space, sorted(recorded))
    assert [s for s in recorded if again[s] != recorded[s]] == []


def test_a_torn_record_then_resume_under_ray_is_one_line_and_exit_2(tmp_path, local_ray):
    """The store's error raised inside an actor reaches the user as the CLI's one line, not Ray's traceback."""
    from typer.testing import CliRunner

    from evolve.cli.main import app
    from evolve.store.keys import individual_key

    store, config, space = open_run(_config(tmp_path, population=4, steps=8, workers=2))
    from evolve.runner.launch import run_in_process

    run_in_process(store, config, space)
    for step in Snapshot.read(store).live():  # every live record torn: whichever a worker reads
        path = tmp_path / "run" / individual_key(step)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    result = CliRunner().invoke(app, ["resume", str(tmp_path / "run"), "--steps", "16", "--executor", "ray"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output + result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'run'}: record individuals/"), result.stderr
    assert "check --repair" in lines[0]


def test_worker_log_lines_reach_the_driver_and_the_log_file(tmp_path, local_ray):
    from typer.testing import CliRunner

    from evolve.cli.main import app

    log_file = tmp_path / "run.log"
    result = CliRunner().invoke(app, ["run", "--store", str(tmp_path / "run"), "--fitness", "synthetic",
                                      "--population", "4", "--steps", "8", "--workers", "2", "--executor", "ray",
                                      "--log-level", "info", "--log-file", str(log_file)])
    assert result.exit_code == 0, result.output + result.stderr
    written = log_file.read_text()
    for i in range(2):
        for event in ("started", "finished"):
            line = f"worker ray-{i}-"
            assert any(line in x and event in x for x in result.stderr.splitlines()), (i, event, result.stderr)
            assert any(line in x and event in x for x in written.splitlines()), (i, event, written)
