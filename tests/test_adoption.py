"""Taking over a step: one live adoption at a time, and at once when the holder is known dead."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

from evolve.config import build_config
from evolve.engine.liveness import Identity, machine_id, process_alive
from evolve.engine.population import Population
from evolve.engine.worker import Worker
from evolve.runner.launch import open_run, total_steps
from evolve.store.check import check_store
from evolve.store.keys import adoption_key, claim_key, death_key, heartbeat_key, individual_key, selection_key
from evolve.store.marks import read_selection, selections_of

LEASE = 0.3


def _run(tmp_path, **kw):
    settings = dict(store=str(tmp_path / "run"), fitness="synthetic", population=4, steps=1, workers=1,
                    refresh_seconds=0.0, lease_seconds=LEASE)
    settings.update(kw)
    return open_run(build_config(settings))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not process_alive(proc.pid)
    return proc.pid


def _observer(store, config, name: str) -> Population:
    """A worker's view that has learnt of the last step's claim the way a worker does: by failing to claim it."""
    pop = Population(store, config.population, total_steps(config), name, LEASE, 0.0)
    pop.refresh(force=True)
    assert pop.claim_next() is None
    return pop


def _lapse(pop: Population, step: int) -> None:
    """Watch ``step`` until it is lapsed on ``pop``'s clock."""
    deadline = time.monotonic() + 10 * LEASE
    while step not in pop.lapsed():
        assert time.monotonic() < deadline, f"step {step} never lapsed"
        pop.refresh(force=True)
        time.sleep(LEASE / 5)


def _claimed_and_abandoned(store, config, space, identity: Identity | str = "claimant") -> int:
    """The initial population written, then a step claimed by ``identity`` that never finishes."""
    first = Worker(store, config, space, worker_id="first")
    for _ in range(config.population):
        first.run_step(first.population.claim_next())
    holder = Population(store, config.population, total_steps(config), identity, config.lease_seconds, 0.0)
    holder.refresh(force=True)
    step = holder.claim_next()
    assert step == config.population
    return step


def _both_saw_the_claimant_go_quiet(tmp_path):
    """A step whose claimant went quiet, and two observers B and C that have each timed its lease."""
    store, config, space = _run(tmp_path)
    step = _claimed_and_abandoned(store, config, space)
    b, c = _observer(store, config, "b"), _observer(store, config, "c")
    for pop in (b, c):
        pop.refresh(force=True)
        _lapse(pop, step)
    return store, step, b, c


def test_a_second_adopter_that_timed_the_old_beat_does_not_adopt(tmp_path):
    """B and C both saw the claimant go quiet; B adopts first. C, whose judgement predates B's
    adoption, must not adopt too (two trainers of one step), even before B's first beat is visible."""
    store, step, b, c = _both_saw_the_claimant_go_quiet(tmp_path)
    assert b.adopt(step) == 0
    assert c.adopt(step) is None, "C adopted a step B had just taken over"
    assert store.list_keys(f"adoptions/{step:012d}-") == [adoption_key(step, 0)]

    b.heartbeat(step, "b-holder", 0, adoption=0)  # B's first beat, then B goes quiet (dies)
    time.sleep(LEASE / 4)
    assert step not in c.lapsed()
    _lapse(c, step)
    assert c.adopt(step) == 1, "after B's own beat went quiet for a lease, C may adopt"


def test_an_adopter_that_dies_before_its_first_beat_is_adopted_after_a_lease(tmp_path):
    store, step, b, c = _both_saw_the_claimant_go_quiet(tmp_path)
    assert b.adopt(step) == 0  # and never beats
    started = time.monotonic()
    assert c.adopt(step) is None
    _lapse(c, step)
    assert time.monotonic() - started >= LEASE
    assert c.adopt(step) == 1


def test_an_adopter_beating_under_the_claimants_key_is_adopted_after_a_lease(tmp_path):
    """Adopters of older stores beat under the claimant's key: the next adoption waits one more lease."""
    store, config, space = _run(tmp_path)
    step = _claimed_and_abandoned(store, config, space)
    store.put_json(heartbeat_key(step), {"step": step, "holder": "old", "seq": 3, "worker": "old"})
    store.create_json(adoption_key(step, 0), {"step": step, "worker": "old"})
    c = _observer(store, config, "c")
    _lapse(c, step)
    assert c.adopt(step) is None
    _lapse(c, step)
    assert c.adopt(step) == 1


def _slot_run(tmp_path, lease: float):
    return _run(tmp_path, lease_seconds=lease, workers=1, steps=4)


def test_a_restarted_worker_takes_over_its_dead_predecessors_step_at_once(tmp_path):
    """Same slot, same machine, the predecessor's process gone: no lease to wait (60 s here)."""
    store, config, space = _slot_run(tmp_path, lease=60.0)
    dead = Identity(worker="ray-0-1", slot="ray-0", machine=machine_id(), pid=_dead_pid())
    step = _claimed_and_abandoned(store, config, space, dead)

    worker = Worker(store, config, space, worker_id="ray-0-2", slot="ray-0")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the run waited for the lease instead of taking over"
    record = store.read_json(individual_key(step))
    assert record["adopted"] and record["worker"] == "ray-0-2"
    assert store.read_json(adoption_key(step, 0))["slot"] == "ray-0"
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations


def test_a_restarted_worker_finds_its_predecessors_claim_whose_mark_was_lost_below_a_logged_one(tmp_path):
    """The predecessor died between its claim and the claim's mark (written later, by the writer thread),
    and another worker has since claimed a later step with its mark in the log: the view knows a claim
    above the lost one, and the restart still takes the lost one over at once."""
    store, config, space = _slot_run(tmp_path, lease=60.0)
    dead = Identity(worker="ray-0-1", slot="ray-0", machine=machine_id(), pid=_dead_pid())
    first = Worker(store, config, space, worker_id="first")
    for _ in range(config.population):
        first.run_step(first.population.claim_next())
    lost: list = []
    holder = Population(store, config.population, total_steps(config), dead, config.lease_seconds, 0.0)
    holder.defer_marks(lost.append)  # the writer thread never got to write them
    holder.refresh(force=True)
    assert holder.claim(config.population + 1) and lost
    other = Population(store, config.population, total_steps(config), "ray-1-1", config.lease_seconds, 0.0)
    other.refresh(force=True)
    assert other.claim(config.population + 2)

    worker = Worker(store, config, space, worker_id="ray-0-2", slot="ray-0")
    worker.population.refresh(force=True)
    assert config.population + 2 in worker.population.in_flight()
    assert config.population + 1 not in worker.population.in_flight()  # no mark: the log alone misses it
    assert worker.population.orphans() == [config.population + 1]


def test_no_takeover_when_the_holder_may_be_alive(tmp_path):
    """Another slot, another machine, or a live process: the step waits for its lease."""
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holders = [
            Identity(worker="ray-1-1", slot="ray-1", machine=machine_id(), pid=_dead_pid()),
            Identity(worker="ray-0-1", slot="ray-0", machine="elsewhere", pid=_dead_pid()),
            Identity(worker="ray-0-1", slot="ray-0", machine=machine_id(), pid=alive.pid),
            Identity(worker="ray-0-1"),
        ]
        for i, holder in enumerate(holders):
            store, config, space = _slot_run(tmp_path / str(i), lease=60.0)
            step = _claimed_and_abandoned(store, config, space, holder)
            worker = Worker(store, config, space, worker_id="ray-0-2", slot="ray-0")
            worker.population.refresh(force=True)
            assert worker.population.orphans() == [], holder
            assert worker.population.adopt_orphan(step) is None, holder
    finally:
        alive.kill()
        alive.wait()


def test_a_restarted_ray_actor_knows_its_predecessor_dead_on_any_machine():
    """Ray restarts an actor (same actor id) only after declaring its previous incarnation dead."""
    me = Identity(worker="ray-0-2", slot="ray-0", machine="node-b", pid=2, actor="a1")
    before = Identity(worker="ray-0-1", slot="ray-0", machine="node-a", pid=1, actor="a1").fields()
    assert me.predecessor_dead(before)
    assert not me.predecessor_dead({**before, "actor": "a2"})  # another actor (another run) on another node
    assert not me.predecessor_dead(me.fields())


# -- the step's new boundaries: attempt 0 in the claim, the child written in the background ---------


def test_a_claim_that_carries_its_selection_is_replayed_by_its_adopter(tmp_path):
    """The claimant dies after its claim (with attempt 0's pair in it), before the tombstone: the adopter
    kills that same loser and breeds from that same parent, under attempt 0, and writes no other selection."""
    store, config, space = _run(tmp_path, steps=1)
    first = Worker(store, config, space, worker_id="first")
    for _ in range(config.population):
        first.run_step(first.population.claim_next())
    dying = Worker(store, config, space, worker_id="dying")
    dying.population.refresh(force=True)
    step = dying.population.claim_next(dying.breeder.chooser)
    carried = read_selection(store, step, 0)
    assert carried == store.read_json(claim_key(step))["selection"] and carried["loser"] != carried["parent"]
    assert not store.exists(selection_key(step, 0)) and not store.exists(death_key(carried["loser"]))

    Worker(store, config, space, worker_id="adopter").run()
    child = store.read_json(individual_key(step))
    assert child["adopted"] and (child["parents"], child["loser"], child["attempt"]) == (
        [carried["parent"]], carried["loser"], 0)
    assert store.read_json(death_key(carried["loser"]))["killed_at_step"] == step
    assert selections_of(store, step) == [carried]
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations


class _NeverRuns:
    """A writer thread whose process died as it started: the child is never written, the beat stops."""

    def submit(self, write, trained, stop_beating, later) -> Future:
        stop_beating()
        return Future()


def test_a_worker_that_dies_with_a_child_unwritten_and_its_next_step_selected_loses_neither(tmp_path):
    """The worker trained step s and handed the child to its writer, claimed step s+1 and killed its
    loser, then died before the write: both steps are taken over (after a lease), each loser dies once."""
    store, config, space = _run(tmp_path, steps=4)
    first = Worker(store, config, space, worker_id="first")
    for _ in range(config.population):
        first.run_step(first.population.claim_next())
    dying = Worker(store, config, space, worker_id="dying")
    dying._writer = lambda: _NeverRuns()
    dying.population.refresh(force=True)
    s, _ = dying._next_step()
    assert dying.run_step(s, background=True) is None
    assert not store.exists(individual_key(s)) and store.exists(claim_key(s))
    s_next, _ = dying._next_step()
    dying.population.settle_selection(s_next, dying.breeder.chooser(s_next))  # killed its loser,
    dying._start_write()  # handed step s's child to the writer thread, and died
    losers = {step: read_selection(store, step, 0)["loser"] for step in (s, s_next)}

    stats = Worker(store, config, space, worker_id="adopter").run()
    assert stats.adopted == 2
    for step, loser in losers.items():
        child = store.read_json(individual_key(step))
        assert child["adopted"] and child["worker"] == "adopter" and child["loser"] == loser
        assert store.read_json(death_key(loser))["killed_at_step"] == step
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations


def test_a_run_writes_each_child_in_the_background_and_flushes_the_last(tmp_path):
    """``Worker.run`` hands each child to the writer thread; when it returns every child is written."""
    store, config, space = _run(tmp_path, steps=12)
    worker = Worker(store, config, space, worker_id="solo")
    written_by = set()
    real = worker._write

    def write(trained):
        written_by.add(threading.current_thread().name)
        return real(trained)

    worker._write = write
    stats = worker.run()
    assert stats.steps == config.population + config.steps and worker._writing is None
    assert all(name.startswith("evolve-writer-") for name in written_by), written_by
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations


def test_a_step_given_up_by_its_holder_is_adopted_by_another_worker_without_a_lease(tmp_path):
    """A worker that will not finish its step (SIGTERM, its grace spent) gives it up: any other worker, in
    another slot on any machine, adopts it at its next look instead of after the lease (an hour here); the
    adopter then deletes the note, and a later holder that gives up again is adopted at once too."""
    store, config, space = _run(tmp_path, lease_seconds=3600.0)
    step = _claimed_and_abandoned(store, config, space)
    observer = Population(store, config.population, total_steps(config), "observer", 3600.0, 0.0)
    observer.refresh(force=True)
    assert observer.lapsed() == [], "nothing lapses within an hour's lease"
    holder = Population(store, config.population, total_steps(config), "claimant", 3600.0, 0.0)
    holder.release(step, None, "stopped by SIGTERM, grace spent")
    assert store.list_keys("heartbeats/") == [f"heartbeats/{step:012d}.released.json"]
    late = Population(store, config.population, total_steps(config), "late", 3600.0, 0.0)  # first look: lists at once
    late.refresh(force=True)
    assert late.lapsed() == [step]
    assert late.adopt(step) == 0
    assert store.list_keys("heartbeats/") == [], "the note outlived the adoption"
    late.release(step, 0, "stopped too")
    observer._lapse_checked = float("-inf")  # its next look is due (a quarter lease on)
    assert observer.lapsed() == [step] and observer.adopt(step) == 1
    worker = Worker(store, config, space, worker_id="finisher")
    assert worker.run_step(step, adoption=1) is True
    assert check_store(store, config.population, total_steps(config)).ok


def test_a_stage_after_the_search_is_computed_once_and_taken_over_when_its_claimant_is_gone(tmp_path):
    """evolve.final.once: a second caller waits for the claimant's record instead of computing it again; a
    claimant whose process is gone (this machine) is taken over at once, a quiet one elsewhere after a lease."""
    from evolve.engine.liveness import machine_id
    from evolve.final.once import claim_key, once
    from evolve.store.backend import Store

    store = Store.open(str(tmp_path / "s"), create=True)
    computed = []

    def compute(name):
        def run():
            computed.append(name)
            store.create_json(f"results/{name}.json", {"by": name})
            return store.read_json(f"results/{name}.json")
        return run

    store.create_json(claim_key("a", 0), {"machine": machine_id(), "pid": _dead_pid(), "created_at": time.time()})
    waited = []
    assert once(store, "a", "results/a.json", compute("a"), 60.0, waited.append)["by"] == "a"
    assert computed == ["a"] and len(waited) == 1 and store.exists(claim_key("a", 1))

    store.create_json(claim_key("own", 0), {"machine": machine_id(), "pid": os.getpid(), "created_at": time.time()})
    assert once(store, "own", "results/own.json", compute("own"), 60.0, None)["by"] == "own"  # an earlier try of ours
    computed.remove("own")

    store.create_json(claim_key("b", 0), {"machine": "elsewhere", "pid": 1, "created_at": time.time()})
    started = time.monotonic()
    assert once(store, "b", "results/b.json", compute("b"), LEASE, None)["by"] == "b"
    assert time.monotonic() - started >= LEASE and computed == ["a", "b"]

    store.create_json(claim_key("c", 0), {"machine": "elsewhere", "pid": 1, "created_at": time.time()})
    timer = threading.Timer(LEASE / 2, lambda: store.create_json("results/c.json", {"by": "the claimant"}))
    timer.start()
    assert once(store, "c", "results/c.json", compute("c"), 60.0, None)["by"] == "the claimant"
    assert computed == ["a", "b"], "a stage its claimant finished was computed again"
    assert once(store, "c", "results/c.json", compute("c"), 60.0, None)["by"] == "the claimant"


def test_a_release_by_a_holder_already_taken_over_is_stale_and_the_step_still_lapses(tmp_path):
    """The claimant gives its step up after adopter 0 took it over (a stalled worker then stopped), and adopter
    0 dies before its first beat: the stale note must not pin the step as given up by the claimant (each adopt
    would then find one adoption too many, forever); it is dropped, and the step lapses after a lease."""
    store, step, b, c = _both_saw_the_claimant_go_quiet(tmp_path)
    assert b.adopt(step) == 0  # and never beats
    b.release(step, None, "the claimant, stopped late")  # a note under the claimant's name, after adoption 0
    c._lapse_checked = float("-inf")
    assert c.lapsed() == [step] and c.adopt(step) is None  # taken as the claimant's release: one adoption too many
    assert store.list_keys("heartbeats/") == [], "the stale note stays"
    _lapse(c, step)
    assert c.adopt(step) == 1
