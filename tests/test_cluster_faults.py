"""Ray fault tests: a three-node cluster that loses a worker node mid-run, and a chaos run of SIGKILLs.

Both run on one ``ray.cluster_utils.Cluster`` (a head with no CPUs, two worker nodes) kept for
the module: starting three nodes costs most of the time here.

Both runs must end exactly as an undisturbed one: ``population + steps`` individuals, N live,
``evolve check`` clean; and every step that a dead process was holding must be finished by an
adopter that kept the step's selection (same parent, same loser, no second tombstone).

Which process held which step is read back from the store afterwards: a step's holders are its
claimant then its adopters in order (``claims/<s>``, ``adoptions/<s>-<j>``), each worker id is
``ray-<i>-<pid>``, and each record's ``created_at`` is when that holder began the step.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from inflight import holders
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.config import RunConfig, build_config
from evolve.runner.launch import open_run, run_on_ray, total_steps
from evolve.store.backend import Store
from evolve.store.check import check_store
from evolve.store.keys import claim_key, death_key, individual_key, step_of
from evolve.store.marks import read_selection, selections_of

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


# -- reading a run back ---------------------------------------------------------------------------


@dataclass
class Kill:
    """One process we ended: a SIGKILLed actor, or an actor that went down with its node."""

    worker: str
    at: float
    window_step: int | None = None  # the step caught between its loser's tombstone and its child
    window_death: dict[str, Any] | None = None


@dataclass
class Hold:
    """A step that a killed process was holding when it died."""

    step: int
    kill: Kill
    began: float

    @property
    def wasted(self) -> float:
        return self.kill.at - self.began


@dataclass
class Outcome:
    holds: list[Hold] = field(default_factory=list)
    adopted: list[int] = field(default_factory=list)


def _holders(store: Store, step: int) -> list[dict[str, Any]]:
    """Who held ``step``, in order: its claimant, then each adopter."""
    records = [store.read_json(claim_key(step))]
    records += [store.read_json(k) for k in store.list_keys(f"adoptions/{step:012d}-")]
    return [r for r in records if r is not None]


def _held_at_death(store: Store, kills: list[Kill]) -> Outcome:
    """The steps each killed process held when it died, and every adopted step of the run.

    A process held step s at its death if it is among s's holders, did not write s's child,
    and s's child was written after the kill (a holder that lost s earlier to a spurious
    adoption had moved on by then).
    """
    by_worker = {k.worker: k for k in kills}
    out = Outcome()
    for key in store.list_keys("individuals/"):
        step = step_of(key)
        child = store.read_json(key)
        if child.get("adopted"):
            out.adopted.append(step)
        for holder in _holders(store, step):
            kill = by_worker.get(holder["worker"])
            if kill and child["worker"] != kill.worker and child["created_at"] > kill.at:
                out.holds.append(Hold(step, kill, float(holder["created_at"])))
    return out


def _assert_exact_and_clean(store: Store, config: RunConfig) -> None:
    report = check_store(store, config.population, total_steps(config))
    assert report.ok, report.violations
    assert report.individuals == total_steps(config) == len(store.list_keys("individuals/"))
    assert report.live == config.population and report.in_flight == 0 and report.finished
    result = CliRunner().invoke(app, ["check", store.url])
    assert result.exit_code == 0 and "ok (finished)" in result.output, result.output


def _assert_adopted_not_redone(store: Store, config: RunConfig, outcome: Outcome) -> None:
    """Each step a dead process held was finished by an adopter with the step's original selection."""
    for hold in outcome.holds:
        child = store.read_json(individual_key(hold.step))
        claimant = store.read_json(claim_key(hold.step))["worker"]
        # the only other way: the process had adopted the step from a slow but live claimant, who finished it
        assert child["adopted"] or child["worker"] == claimant, (hold, child["worker"])
    for step in outcome.adopted:
        child = store.read_json(individual_key(step))
        if step < config.population:
            continue
        attempt = child["attempt"]
        selection = read_selection(store, step, attempt)
        assert (child["parents"], child["loser"]) == ([selection["parent"]], selection["loser"]), step
        death = store.read_json(death_key(child["loser"]))
        assert (death["killed_at_step"], death["attempt"]) == (step, attempt), (step, death)
        assert read_selection(store, step, attempt + 1) is None, f"step {step} was selected again"


# -- the processes we may kill --------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(workers: list[str], timeout: float) -> dict[str, float]:
    """Worker id -> when its process was first seen gone, for those gone within ``timeout``."""
    died: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(died) < len(workers) and time.monotonic() < deadline:
        for worker in workers:
            if worker not in died and not _alive(_pid(worker)):
                died[worker] = time.time()
        time.sleep(0.02)
    return died


def _pid(worker: str) -> int:
    return int(worker.rsplit("-", 1)[1])


def _ours(pid: int, raylets: set[int]) -> bool:
    """Only a worker process started by one of this test's raylets may be killed."""
    return _ppid(pid) in raylets


def _holding_now(store: Store) -> dict[int, str]:
    """Pending step -> worker id of the actor holding it."""
    return {step: worker for step, worker in holders(store).items() if worker.startswith("ray-")}


# -- the cluster --------------------------------------------------------------------------------------

CLUSTER_WORKERS = 4


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPUs (the driver's node, never removed) and two worker nodes, for the module.

    Each worker node alone can host every actor, so losing one leaves room for all the restarts.
    Another module's Ray (test_ray.py keeps one per module) is shut down first, ours at the end.
    """
    from ray._common.utils import reset_ray_address
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
    })
    # Cluster advertises itself in /tmp/ray/ray_current_cluster, where any other `ray.init()` on this
    # machine (another test session) would join it; the runs here are given its address instead
    reset_ray_address()
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=CLUSTER_WORKERS)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _actors_by_raylet(store: Store, raylets: set[int]) -> dict[int, list[str]]:
    """Raylet pid -> the actors under it that hold a step now."""
    out: dict[int, list[str]] = {pid: [] for pid in raylets}
    for worker in sorted(set(_holding_now(store).values())):
        parent = _ppid(_pid(worker))
        if parent in out:
            out[parent].append(worker)
    return out


def _raylet_of(cluster) -> dict[int, Any]:
    """Raylet pid -> worker node, for the worker nodes still in the cluster."""
    return {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}


# -- a node lost mid-run ----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_losing_a_worker_node_mid_run(tmp_path, cluster):
    """Remove the worker node hosting actors mid-run: they restart on the other node, their steps are adopted."""
    assert len(cluster.worker_nodes) == 2
    config = build_config({
        "store": str(tmp_path / "run"), "fitness": "synthetic", "synthetic_seconds": 0.3, "population": 8,
        "steps": 60, "workers": CLUSTER_WORKERS, "cpus_per_worker": 1, "lease_seconds": 1.5,
        "refresh_seconds": 0.2, "address": cluster.address,
    })
    store, config, space = open_run(config)
    removed: dict[str, Any] = {}
    failure: list[BaseException] = []

    def remove_busiest_node() -> None:
        try:
            while len(store.list_keys("individuals/")) < config.population + config.steps // 4:
                time.sleep(0.1)
            raylet_of = _raylet_of(cluster)
            deadline = time.monotonic() + 10.0
            while True:  # until some actor is seen holding a step
                on_node = _actors_by_raylet(store, set(raylet_of))
                raylet = max(on_node, key=lambda p: len(on_node[p]))
                if on_node[raylet] or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            removed.update(workers=on_node[raylet], done=len(store.list_keys("individuals/")))
            cluster.remove_node(raylet_of[raylet], allow_graceful=False)
            removed["died"] = _wait_dead(on_node[raylet], timeout=30.0)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertions below
            failure.append(exc)

    thread = threading.Thread(target=remove_busiest_node, daemon=True)
    thread.start()
    started = time.perf_counter()
    results = run_on_ray(store, config, space)
    elapsed = time.perf_counter() - started
    thread.join(timeout=30)
    assert not failure, failure
    assert removed.get("workers"), f"no actor was running on a worker node: {removed}"
    assert removed["done"] < total_steps(config), "the run ended before the node was removed"

    _assert_exact_and_clean(store, config)
    assert set(removed["died"]) == set(removed["workers"]), f"actors outlived their node: {removed}"
    kills = [Kill(worker, at) for worker, at in removed["died"].items()]
    outcome = _held_at_death(store, kills)
    assert outcome.holds, "no step of the removed node's actors was left to adopt"
    _assert_adopted_not_redone(store, config, outcome)
    # the removed node's actors came back (max_restarts=-1) as new processes, whose run() returned
    final = {r["worker"].rsplit("-", 1)[0]: r["worker"] for r in results}
    assert sorted(final) == [f"ray-{i}" for i in range(config.workers)]
    for worker in removed["workers"]:
        assert final[worker.rsplit("-", 1)[0]] != worker, f"{worker}'s run() returned from the removed node"
    print(f"\nnode removed at {removed['done']}/{total_steps(config)} steps with {len(removed['workers'])} actors; "
          f"{len(outcome.holds)} steps adopted from it, {sum(h.wasted for h in outcome.holds):.1f} s of training "
          f"lost; run {elapsed:.1f} s")


# -- chaos: SIGKILLs at random moments -----------------------------------------------------------------

KILLS = 20
WINDOW_EVERY = 2  # every other kill waits for a step between its loser's tombstone and its child


def _in_window(store: Store, raylets: set[int]) -> tuple[int, str, dict[str, Any]] | None:
    """A step whose loser is dead but whose child is not written, with the live actor holding it."""
    for step, worker in sorted(_holding_now(store).items(), reverse=True):
        if not _ours(_pid(worker), raylets):
            continue
        for selection in selections_of(store, step):
            death = store.read_json(death_key(selection["loser"]))
            if death is None or (death["killed_at_step"], death["attempt"]) != (step, selection["attempt"]):
                continue
            if holders(store).get(step) == worker and not store.exists(individual_key(step)):
                return step, worker, death
    return None


def _kill(worker: str, raylets: set[int]) -> bool:
    pid = _pid(worker)
    if not _ours(pid, raylets):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class Chaos(threading.Thread):
    """SIGKILLs ``KILLS`` actor processes, each at a seeded random point of its own slice of the run.

    Kill k is due once the run has done a seeded random number of children inside the k-th of
    ``KILLS + 2`` equal slices of its steps: every kill lands before the end whatever the machine's
    speed, and the restarted actors get to work between kills (killing faster than Ray restarts
    them would only stall the run). Every other kill waits for a step between its loser's
    tombstone and its child and kills the actor holding it.
    """

    def __init__(self, store: Store, config: RunConfig, raylets: set[int], seed: int = 5) -> None:
        super().__init__(daemon=True)
        self.store, self.raylets, self.rng = store, raylets, random.Random(seed)
        width = config.steps / (KILLS + 2)
        self.due = [config.population + int(width * (k + self.rng.random())) for k in range(KILLS)]
        self.kills: list[Kill] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for k, due in enumerate(self.due):
                while len(self.store.list_keys("individuals/")) < due:
                    if self.done.wait(0.05):
                        return
                kill = None
                while kill is None:
                    kill = self._window_kill() if k % WINDOW_EVERY else self._random_kill()
                    if kill is None and self.done.wait(0.02):
                        return
                self.kills.append(kill)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc

    def _random_kill(self) -> Kill | None:
        workers = sorted(set(_holding_now(self.store).values()))
        self.rng.shuffle(workers)
        for worker in workers:
            if _kill(worker, self.raylets):
                return Kill(worker, time.time())
        return None

    def _window_kill(self) -> Kill | None:
        found = _in_window(self.store, self.raylets)
        if found and _kill(found[1], self.raylets):
            return Kill(found[1], time.time(), window_step=found[0], window_death=found[2])
        return None


def _back_after(store: Store, kills: list[Kill]) -> list[float]:
    """Seconds from each kill to the first claim or adoption by the actor's next incarnation."""
    records = [store.read_json(k) for prefix in ("claims/", "adoptions/") for k in store.list_keys(prefix)]
    out = []
    for kill in kills:
        name = kill.worker.rsplit("-", 1)[0] + "-"
        later = [r["created_at"] for r in records if r and r["worker"].startswith(name)
                 and r["worker"] != kill.worker and r["created_at"] > kill.at]
        if later:
            out.append(min(later) - kill.at)
    return out


@pytest.mark.timeout(300)
def test_chaos_sigkills_every_pending_step_is_adopted(tmp_path, cluster):
    """20 SIGKILLs at seeded random moments, half of them between a tombstone and its child: the run is exact."""
    config = build_config({
        "store": str(tmp_path / "run"), "fitness": "synthetic", "synthetic_seconds": 0.15, "population": 8,
        "steps": 120, "workers": 4, "cpus_per_worker": 0.25, "lease_seconds": 1.0, "refresh_seconds": 0.1,
        "address": cluster.address,
    })
    store, config, space = open_run(config)
    chaos = Chaos(store, config, set(_raylet_of(cluster)))
    chaos.start()
    started = time.perf_counter()
    try:
        run_on_ray(store, config, space)
    finally:
        chaos.done.set()
        chaos.join(timeout=30)
    elapsed = time.perf_counter() - started
    assert chaos.error is None, chaos.error
    kills = chaos.kills
    assert len(kills) == KILLS, f"only {len(kills)} kills before the run ended"

    _assert_exact_and_clean(store, config)
    outcome = _held_at_death(store, kills)
    _assert_adopted_not_redone(store, config, outcome)
    assert len(outcome.holds) >= KILLS // 2, f"only {len(outcome.holds)} kills caught a step in flight"
    assert all(h.wasted >= 0 for h in outcome.holds), outcome.holds
    held = {(h.step, h.kill.worker) for h in outcome.holds}
    caught = [k for k in kills if k.window_step is not None and (k.window_step, k.worker) in held]
    assert len(caught) >= 5, f"only {len(caught)} kills landed between a tombstone and its child"
    for kill in caught:
        child = store.read_json(individual_key(kill.window_step))
        death = kill.window_death
        assert child["adopted"] and child["worker"] != kill.worker
        assert (child["loser"], child["attempt"]) == (death["step"], death["attempt"]), (kill, child)
        assert store.read_json(death_key(death["step"])) == death
    status = CliRunner().invoke(app, ["status", store.url])
    assert status.exit_code == 0 and f"{len(outcome.adopted)} adopted" in status.output, status.output
    wasted = sum(h.wasted for h in outcome.holds)
    finished = [store.read_json(individual_key(h.step))["created_at"] - h.kill.at for h in outcome.holds]
    rows = {"kills": len(kills), "in window": len(caught), "steps held": len(outcome.holds),
            "adoptions": len(outcome.adopted), "wasted train s": f"{wasted:.1f}",
            "done after s (median)": f"{statistics.median(finished):.1f}",
            "actor back s (median)": f"{statistics.median(_back_after(store, kills)):.1f}",
            "run s": f"{elapsed:.1f}"}
    print("\n" + "  ".join(rows) + "\n" + "  ".join(f"{v!s:>{len(k)}}" for k, v in rows.items()))


# -- a restarted actor takes over its own step at once -------------------------------------------------

TAKEOVERS = 10
TAKEOVER_BOUND_S = 15.0


def _takeover(store: Store, step: int, worker: str, after: float, timeout: float) -> dict[str, Any] | None:
    """The first adoption of ``step`` created after ``after``, waiting up to ``timeout`` seconds; ``{}``
    if ``worker`` wrote the step's child itself before it died (it finished between the look and the kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in store.list_keys(f"adoptions/{step:012d}-"):
            record = store.read_json(key)
            if record and record["created_at"] > after:
                return record
        child = store.read_json(individual_key(step))
        if child is not None and child["worker"] == worker and not child["adopted"]:
            return {}
        time.sleep(0.05)
    return None


@pytest.mark.timeout(300)
def test_a_sigkilled_actors_step_is_taken_over_by_its_restart_within_seconds(tmp_path, cluster):
    """With a 60 s lease, ten SIGKILLed actors: each restarted incarnation (same slot, same node, its
    predecessor's process gone) adopts the steps its predecessor held at once; a second adoption of a step
    only once the first adopter is dead."""
    config = build_config({
        "store": str(tmp_path / "run"), "fitness": "synthetic", "synthetic_seconds": 2.0, "population": 4,
        "steps": 1_000, "workers": 2, "cpus_per_worker": 1, "lease_seconds": 60.0, "refresh_seconds": 0.2,
        "address": cluster.address,
    })
    store, config, space = open_run(config)
    raylets = set(_raylet_of(cluster))
    stop = threading.Event()
    driver = threading.Thread(target=run_on_ray, args=(store, config, space), kwargs={"stop": stop}, daemon=True)
    driver.start()
    delays: list[float] = []
    killed: dict[str, float] = {}  # worker id -> when we killed it
    try:
        while len(delays) < TAKEOVERS:
            held = [(s, w) for s, w in sorted(_holding_now(store).items()) if _ours(_pid(w), raylets)
                    and not store.list_keys(f"adoptions/{s:012d}-")]
            if not held:
                time.sleep(0.05)
                continue
            step, worker = held[-1]
            at = time.time()
            if not _kill(worker, raylets):
                continue
            killed[worker] = at
            record = _takeover(store, step, worker, at, timeout=45.0)
            assert record is not None, f"step {step} held by killed {worker} was not taken over in 45 s"
            if not record:
                continue  # nothing to take over
            assert record["slot"] == worker.rsplit("-", 1)[0] and record["worker"] != worker, record
            delays.append(record["created_at"] - at)
    finally:
        stop.set()
        driver.join(timeout=60)
    assert not driver.is_alive(), "the run did not stop"
    print(f"\ntakeover after SIGKILL, lease 60 s: max {max(delays):.1f} s, median {statistics.median(delays):.1f} s "
          f"over {len(delays)} kills: {', '.join(f'{d:.1f}' for d in delays)}")
    assert max(delays) <= TAKEOVER_BOUND_S, delays
    # a worker holds up to two steps (its last child is written while the next trains), so a step may be
    # adopted again: only once the previous adopter was killed, never while it may be alive
    adoptions = [store.read_json(k) for k in store.list_keys("adoptions/")]
    for earlier, later in zip(adoptions, adoptions[1:]):
        if later["step"] == earlier["step"]:
            assert earlier["worker"] in killed and later["created_at"] > killed[earlier["worker"]], (earlier, later)
    report = check_store(store, config.population, total_steps(config))
    assert report.ok, report.violations
