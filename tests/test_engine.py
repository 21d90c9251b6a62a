"""The worker loop and step protocol, in-process, on a real store with synthetic fitness."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from evolve.config import RunConfig, build_config
from evolve.engine.worker import Worker
from evolve.runner.launch import open_run, run_in_process, total_steps
from evolve.store.check import check_store
from evolve.store.keys import (
    claim_key,
    death_key,
    heartbeat_key,
    individual_key,
    pin_key,
    selection_key,
    step_of,
)
from evolve.store.snapshot import Snapshot


def synthetic(tmp_path, **kw) -> RunConfig:
    base = dict(store=str(tmp_path / "run"), fitness="synthetic", population=8, steps=40, workers=2,
                refresh_seconds=0.0, lease_seconds=0.5)
    base.update(kw)
    return build_config(base)


@pytest.mark.parametrize("selection", ["tournament", "aging"])
def test_in_process_run_is_exact_and_clean(tmp_path, selection):
    config = synthetic(tmp_path, selection=selection, sample_size=3)
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    report = check_store(store, config.population, total_steps(config))
    assert report.ok, report.violations
    assert report.individuals == config.population + config.steps
    assert report.live == config.population
    assert report.finished


def test_fitness_improves_under_selection(tmp_path):
    config = synthetic(tmp_path, steps=150, population=10)
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    snap = Snapshot.read(store)
    initial = max(snap.individuals[s]["fitness"] for s in range(config.population))
    assert snap.best(live_only=True)["fitness"] > initial


def test_same_seed_same_first_children(tmp_path):
    runs = []
    for name in ("a", "b"):
        config = synthetic(tmp_path / name, workers=1, steps=10)
        store, config, space = open_run(config)
        run_in_process(store, config, space)
        snap = Snapshot.read(store)
        runs.append([(r["step"], r["parents"], r["mutation"], r["hash"]) for _, r in sorted(snap.individuals.items())])
    assert runs[0] == runs[1]


def test_step_abandoned_after_kill_is_adopted(tmp_path):
    """A worker that dies between the tombstone and the child leaves a step that another finishes."""
    config = synthetic(tmp_path, workers=1, steps=6)
    store, config, space = open_run(config)
    first = Worker(store, config, space, worker_id="first")
    for _ in range(config.population):
        first.run_step(first.population.claim_next())
    first.population.refresh(force=True)
    step = first.population.claim_next()
    first.population.settle_selection(step, first.breeder.chooser(step))  # killed the loser, then "crashed"
    assert store.read_json(death_key(store.read_json(selection_key(step, 0))["loser"])) is not None
    assert store.read_json(individual_key(step)) is None

    second = Worker(store, config, space, worker_id="second")
    stats = second.run()
    assert stats.adopted == 1
    record = store.read_json(individual_key(step))
    assert record["worker"] == "second" and record["adopted"]
    assert record["parents"] == [store.read_json(selection_key(step, 0))["parent"]]
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations


def test_heartbeats_only_past_a_quarter_lease_and_at_once_for_an_adopter(tmp_path):
    """A fresh step shorter than a quarter lease writes no heartbeat; a long one and an adopted one do,
    each under its holder's key, deleted once the step is over."""
    config = synthetic(tmp_path, workers=1, steps=4, lease_seconds=8.0)  # first beat after 2 s
    store, config, space = open_run(config)
    beats: list[tuple[str, dict]] = []
    put_json = store.put_json
    store.put_json = lambda key, record: (beats.append((key, record)) if key.startswith("heartbeats/") else None,
                                          put_json(key, record))[1]
    worker = Worker(store, config, space, worker_id="w")
    for _ in range(config.population):
        assert worker.run_step(worker.population.claim_next())
    assert beats == []

    step = worker.population.claim_next()
    assert worker.run_step(step, adoption=0)  # as if taken over from a silent holder
    assert [(k, r["worker"], r["adoption"]) for k, r in beats] == [(heartbeat_key(step, 0), "w", 0)]
    assert store.list_keys("heartbeats/") == []

    slow = Worker(store, config.model_copy(update={"lease_seconds": 0.2, "synthetic_seconds": 0.3}), space,
                  worker_id="slow")
    slow.store = store
    slow.population.refresh(force=True)
    step = slow.population.claim_next()
    assert slow.run_step(step)
    assert max(r["seq"] for k, r in beats if k == heartbeat_key(step)) >= 1


def test_one_thread_beats_for_every_held_step_and_ends_when_idle(tmp_path, monkeypatch):
    """A worker's beats come from one thread of its own, for each step it holds, each under its own
    key; none after stop(), which deletes the record; the thread ends after a quiet while and the next
    beat starts another."""
    from evolve.engine import heartbeat

    monkeypatch.setattr(heartbeat, "IDLE_SECONDS", 0.3)
    store, config, space = open_run(synthetic(tmp_path, workers=1, lease_seconds=0.4))  # a beat every 0.1 s
    beats: list[tuple[str, int, threading.Thread]] = []
    put_json = store.put_json
    store.put_json = lambda key, record: (beats.append((key, record["seq"], threading.current_thread()))
                                          if key.startswith("heartbeats/") else None, put_json(key, record))[1]
    worker = Worker(store, config, space, worker_id="w")
    first = worker.heartbeats.start(3, None, at_once=False)  # claimed: first beat a quarter lease on
    second = worker.heartbeats.start(4, 0, at_once=True)  # adopted: at once
    time.sleep(0.35)
    first.stop()
    stopped = len(beats)
    assert store.read_json(heartbeat_key(3)) is None and store.read_json(heartbeat_key(4, 0)) is not None
    time.sleep(0.25)
    assert all(key != heartbeat_key(3) for key, _, _ in beats[stopped:])  # nothing after stop()
    second.stop()
    assert store.list_keys("heartbeats/") == []
    assert {key for key, _, _ in beats} == {heartbeat_key(3), heartbeat_key(4, 0)}
    assert [seq for key, seq, _ in beats if key == heartbeat_key(4, 0)][:3] == [0, 1, 2]
    assert len({thread for _, _, thread in beats}) == 1 and beats[0][2].name == "evolve-heartbeats-w"
    assert beats[0][0] == heartbeat_key(4, 0)  # the adopter's beat came first, at once
    time.sleep(0.6)
    assert worker.heartbeats._thread is None and not beats[0][2].is_alive()
    again = worker.heartbeats.start(5, 1, at_once=True)
    time.sleep(0.05)
    again.stop()
    assert beats[-1][0] == heartbeat_key(5, 1) and store.list_keys("heartbeats/") == []


def test_stop_while_waiting_for_live_individuals_returns(tmp_path):
    """Stopped while its step waits for a second live individual (the rest held by crashed steps whose
    lease has not lapsed), a worker gives the step up instead of waiting on: Ctrl-C must not hang."""
    config = synthetic(tmp_path, workers=1, population=3, steps=6, lease_seconds=60.0)
    store, config, space = open_run(config)
    ghost = Worker(store, config, space, worker_id="ghost")
    for _ in range(config.population):
        ghost.run_step(ghost.population.claim_next())
    crashed = []
    for _ in range(2):  # two steps kill a loser each, then their process "crashes"
        ghost.population.refresh(force=True)
        crashed.append(ghost.population.claim_next())
        ghost.population.settle_selection(crashed[-1], ghost.breeder.chooser(crashed[-1]))
    assert len(ghost.population.live()) == 1

    worker = Worker(store, config, space, worker_id="stopped")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), "the worker should be waiting for live individuals"
    worker.stop()
    thread.join(10.0)
    assert not thread.is_alive(), "a stopped worker kept waiting for live individuals"
    claimed = [step_of(k) for k in store.list_keys("claims/") if step_of(k) >= config.population]
    claimed = [s for s in claimed if s not in crashed]
    assert len(claimed) == 1, claimed  # claims land on one of the lowest free steps, not always the next
    assert not store.exists(selection_key(claimed[0], 0))
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.in_flight == 2, report.violations


def test_zombie_loses_at_create_once(tmp_path):
    """A late worker replaying a finished step records nothing new."""
    config = synthetic(tmp_path, workers=1, steps=4)
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    before = store.read_json(individual_key(config.population + 1))
    zombie = Worker(store, config, space, worker_id="zombie")
    zombie.population.refresh(force=True)
    assert zombie.run_step(config.population + 1) is False
    assert store.read_json(individual_key(config.population + 1)) == before
    assert check_store(store, config.population, total_steps(config)).ok


def test_racing_workers_on_one_step_kill_once(tmp_path):
    """Several actors replaying the same claimed step converge on one selection and one death."""
    config = synthetic(tmp_path, workers=1, steps=3)
    store, config, space = open_run(config)
    seeder = Worker(store, config, space, worker_id="seed")
    for _ in range(config.population):
        seeder.run_step(seeder.population.claim_next())
    step = config.population
    assert store.create_json(claim_key(step), {"step": step, "worker": "ghost"})
    workers = [Worker(store, config, space, worker_id=f"w{i}") for i in range(4)]
    results = []
    threads = [threading.Thread(target=lambda w=w: results.append(w.run_step(step))) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    killed = [d for d in Snapshot.read(store).deaths.values() if d["killed_at_step"] == step]
    assert len(killed) == 1


def test_resume_conflicting_config_is_refused(tmp_path):
    from evolve.config import ConfigError

    config = synthetic(tmp_path, steps=2)
    open_run(config)
    with pytest.raises(ConfigError, match="population"):
        open_run(synthetic(tmp_path, population=9), overrides={"population": 9})


def test_generational_genetic_cnn_run(tmp_path):
    config = synthetic(tmp_path, genome="gcnn", selection="generational", population=6, steps=18, p_c=0.5)
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations
    snap = Snapshot.read(store)
    for step in range(config.population, total_steps(config)):
        record = snap.individuals[step]
        generation = step // config.population
        assert record["generation"] == generation
        assert record["loser"] == step - config.population
        assert all((generation - 1) * 6 <= p < generation * 6 for p in record["parents"])
    generations = store.list_keys("generations/")
    assert len(generations) == 3
    repeated = [r for r in snap.individuals.values() if r.get("evaluations", 1) > 1]
    assert repeated, "roulette copies should re-evaluate some genomes"
    for record in repeated:
        earlier = [r["raw_fitness"] for s, r in snap.individuals.items()
                   if r["hash"] == record["hash"] and s < record["step"] - record["step"] % 6]
        assert record["fitness"] == pytest.approx((record["raw_fitness"] + sum(earlier)) / (1 + len(earlier)))


def test_roulette_prefers_the_fit():
    import random

    from evolve.engine.generational import roulette

    picks = roulette([0.1, 0.1, 0.9], 1000, random.Random(0))
    assert picks.count(2) == 1000  # weights are fitness above the minimum
    assert set(roulette([0.5, 0.5], 100, random.Random(0))) == {0, 1}


def test_generational_needs_whole_generations(tmp_path):
    from evolve.config import ConfigError

    with pytest.raises(ConfigError, match="multiple of population"):
        synthetic(tmp_path, genome="gcnn", selection="generational", population=6, steps=10)


def test_genetic_cnn_children_train_from_scratch_unless_told_otherwise(tmp_path):
    gcnn = synthetic(tmp_path, genome="gcnn", selection="generational", population=4, steps=4)
    assert gcnn.train.inherit_weights is False  # Xie & Yuille: every child trained from scratch
    assert synthetic(tmp_path).train.inherit_weights is True  # Real et al.: children inherit
    told = synthetic(tmp_path, genome="gcnn", selection="generational", population=4, steps=4,
                     train={"inherit_weights": True})
    assert told.train.inherit_weights is True
    store, config, _ = open_run(gcnn)
    assert store.read_json("run.json")["config"]["train"]["inherit_weights"] is False  # stored resolved


def test_inheriting_crossover_child_takes_each_stage_from_its_parent(tmp_path):
    """With inheritance on, a child whose every stage was swapped holds its second parent's weights."""
    from safetensors.torch import load

    config = build_config(dict(
        store=str(tmp_path / "run"), dataset="digits", genome="gcnn", selection="generational", population=4,
        steps=4, workers=1, p_c=1.0, p_m=0.0, genome_options={"q_c": 1.0}, refresh_seconds=0.0,
        train={"batches": 2, "batch_size": 16, "learning_rate": 1e-30, "weight_decay": 0.0, "momentum": 0.0,
               "inherit_weights": True, "device": "cpu"}))
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    snap = Snapshot.read(store)

    def weights(step):
        return load(store.read_bytes(snap.individuals[step]["weights"]["key"]))

    checked = 0
    for step in range(4, 8):
        record = snap.individuals[step]
        first, second = record["parents"]
        if first == second or snap.individuals[first]["hash"] == snap.individuals[second]["hash"]:
            continue
        assert record["genome"] == snap.individuals[second]["genome"]  # every stage came from the partner
        child, right, wrong = weights(step), weights(second), weights(first)
        convs = [k for k in child if k.startswith("stages.") and k.endswith("conv.weight")]
        assert convs and all(torch.allclose(child[k], right[k], atol=1e-6) for k in convs)
        assert not any(k in wrong and wrong[k].shape == child[k].shape and torch.allclose(child[k], wrong[k])
                       for k in convs)
        checked += 1
    assert checked, "every crossover of this seed paired an individual with itself"


def test_gc_keeps_what_is_needed_and_frees_the_rest(tmp_path):
    from evolve.store.sweep import collect

    config = build_config(dict(store=str(tmp_path / "run"), dataset="digits", population=4, steps=8, workers=1,
                               refresh_seconds=0.0, train={"batches": 2}, keep="all"))  # `evolve gc` for old stores
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    snap = Snapshot.read(store)
    assert all(r["weights"] for r in snap.individuals.values())
    orphan = "weights/000000000005-orphan.safetensors"
    assert store.create_blob(orphan, b"not recorded")

    kept_all = collect(store, keep_best=1, grace_seconds=3600)
    assert kept_all.removed == [orphan]  # dead individuals are kept during the grace period

    report = collect(store, keep_best=1, grace_seconds=0)
    left = set(store.list_keys("weights/"))
    live = {snap.individuals[s]["weights"]["key"] for s in snap.live()}
    assert left == live
    assert len(report.removed) == len(snap.deaths)
    assert check_store(store, config.population, total_steps(config)).ok


def test_gc_keeps_what_the_run_kept_the_best_keep_best_ever(tmp_path):
    """`evolve gc` and the in-run collector share one rule: a finished run's best keep_best (dead ones
    too) keep their weights, so each of them can still be exported after gc."""
    from typer.testing import CliRunner

    import evolve
    from evolve.cli import app
    from evolve.store.keep import best_ever

    config = build_config(dict(store=str(tmp_path / "run"), dataset="digits", population=4, steps=14, workers=1,
                               refresh_seconds=0.0, train={"batches": 2}, keep_best=3, selection="aging",
                               sample_size=2))
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    snap = Snapshot.read(store)
    top = best_ever(((s, r["fitness"]) for s, r in snap.individuals.items()), 3)
    assert top - set(snap.live()), "aging killed none of the best 3: the test would not tell the rules apart"
    result = CliRunner().invoke(app, ["gc", str(tmp_path / "run"), "--grace", "0"])
    assert result.exit_code == 0, result.output
    left = set(store.list_keys("weights/"))
    kept = {snap.individuals[s]["weights"]["key"] for s in top | set(snap.live())}
    assert left == kept
    run = evolve.open(str(tmp_path / "run"))
    for step in top:
        run.save_weights(str(tmp_path / f"{step}.safetensors"), step)
        assert (tmp_path / f"{step}.safetensors").stat().st_size > 0
    gone = next(s for s in snap.deaths if s not in top)
    with pytest.raises(evolve.api.StoreError, match="no stored weights"):
        run.save_weights(str(tmp_path / "gone.safetensors"), gone)


def test_a_store_without_log_marks_resumes_without_waiting_for_leases(tmp_path):
    """A store written before the log (or one whose marks were lost) gets its marks back on resume:
    its children are known at once, and the loser of a step in flight is never sampled."""
    import time

    from evolve.engine.population import Population
    from evolve.store.keys import kill_mark
    from evolve.store.marks import backfill_log

    config = synthetic(tmp_path, workers=1, steps=10, lease_seconds=60.0)
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    longer = config.model_copy(update={"steps": 20})
    store, longer, space = open_run(longer, resume=True, overrides={"steps": 20})
    crashed = Worker(store, longer, space, worker_id="crashed")
    crashed.population.refresh(force=True)
    step = crashed.population.claim_next()
    choice, attempt = crashed.population.settle_selection(step, crashed.breeder.chooser(step))  # then "died"
    store.delete_prefix("log/")

    assert backfill_log(store) == total_steps(config) + 1
    assert store.exists(kill_mark(step, attempt, choice.loser, choice.parent))
    observer = Population(store, longer.population, total_steps(longer), "observer", 60.0, 0.0)
    observer.refresh(force=True)
    assert len(observer.view.done) == total_steps(config)
    assert choice.loser not in {m.step for m in observer.live()}
    assert backfill_log(store) == 0

    store.delete_prefix("log/")
    started = time.monotonic()
    store, longer, space = open_run(longer, resume=True)
    worker = Worker(store, longer, space, worker_id="resumed")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    expected = longer.steps - config.steps - 1  # all but the crashed step, which waits for its 60 s lease
    while worker.stats.steps < expected and time.monotonic() - started < 20:
        time.sleep(0.05)
    worker.stop()
    thread.join(10)
    assert worker.stats.steps == expected and not store.exists(individual_key(step))


def test_check_reports_a_log_mark_that_disagrees_with_its_record(tmp_path):
    from evolve.store.keys import done_mark

    config = synthetic(tmp_path, workers=1, steps=4)
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    assert check_store(store, config.population, total_steps(config)).ok
    child = store.read_json(individual_key(config.population))
    store.put_json(done_mark(config.population, child["loser"], child["fitness"] + 1.0), {})
    report = check_store(store, config.population, total_steps(config))
    assert [p for p in report.violations if "log/" in p and "fitness" in p], report.violations


def _weights_ok(store, record) -> bool:
    """The record's weights are in the store, whole."""
    import hashlib

    data = store.read_bytes(record["weights"]["key"])
    return data is not None and hashlib.sha256(data).hexdigest() == record["weights"]["sha256"]


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_workers_collect_dead_weights_during_the_run(tmp_path, keep):
    """keep = "needed": the workers delete dead individuals' weights as they go, and the run ends with about
    population + workers + keep_best weight files, every live one and the best keep_best ever readable.
    keep = "all": nothing is deleted."""
    config = build_config(dict(store=str(tmp_path / "run"), dataset="digits", population=4, steps=16, workers=2,
                               refresh_seconds=0.0, lease_seconds=0.4, keep=keep, keep_best=2,
                               final_batches=0, train={"batches": 2}))
    store, config, space = open_run(config)
    store.create_json(pin_key(0, "test"), {"step": 0, "by": "test"})  # another command will read step 0's
    run_in_process(store, config, space)
    snap = Snapshot.read(store)
    left = set(store.list_keys("weights/"))
    assert _weights_ok(store, snap.individuals[0])
    if keep == "all":
        assert len(left) == total_steps(config)
        return
    assert len(left) <= config.population + config.workers + config.keep_best + 1, sorted(left)
    ranked = sorted(snap.individuals.values(), key=lambda r: (r["fitness"], -r["step"]), reverse=True)
    for record in [snap.individuals[s] for s in snap.live()] + ranked[:config.keep_best]:
        assert _weights_ok(store, record), record["step"]
    assert check_store(store, config.population, total_steps(config)).ok


def test_the_collectors_grace_follows_the_slowest_recent_selection(tmp_path, monkeypatch):
    """A dead individual's weights outlive the base grace by twice the slowest of the worker's last
    selections (view refresh to parent weights read): on a slow store a stale view's choice is read late."""
    from evolve.engine import collector as collector_module
    from evolve.engine.collector import SELECTIONS_KEPT, Collector
    from evolve.engine.population import Population
    from evolve.store.backend import Store
    from evolve.store.keys import individual_key

    clock = [1000.0]
    monkeypatch.setattr(collector_module.time, "monotonic", lambda: clock[0])
    store = Store.open(str(tmp_path / "s"), {}, create=True)
    key = "weights/000000000003-a.safetensors"
    store.create_blob(key, b"weights")
    store.create_json(individual_key(3), {"step": 3, "fitness": 0.5, "weights": {"key": key}})
    collector = Collector(store, Population(store, 4, 8, "w", 60.0, 0.0), keep_best=1, grace_seconds=0.05)
    assert collector.grace() == 0.05
    collector.observe(0.2)
    collector.observe(float("inf"))  # a view never refreshed: ignored
    assert collector.grace() == pytest.approx(0.45)
    collector.population.killed.append(3)
    collector.collect()
    clock[0] += 0.44
    assert collector.collect() == 0 and store.read_bytes(key) == b"weights", \
        "past the base grace, not past the slow selections'"
    clock[0] += 0.02
    assert collector.collect() == 1 and store.read_bytes(key) is None
    for _ in range(SELECTIONS_KEPT):
        collector.observe(0.01)
    assert collector.grace() == pytest.approx(0.07), "the window forgets old slow selections"


def test_a_workers_collector_hears_of_its_selections_and_they_are_quick_on_a_local_disk(tmp_path):
    from evolve.engine.worker import Worker

    config = build_config(dict(store=str(tmp_path / "run"), fitness="synthetic", population=4, steps=12, workers=1,
                               refresh_seconds=0.0))
    store, config, space = open_run(config)
    worker = Worker(store, config, space)
    worker.run()
    observed = list(worker.collector._selections)
    assert len(observed) == config.steps, "one observation per fresh claim with a parent"
    assert all(0.0 <= s < 5.0 for s in observed), observed


def test_a_step_short_of_live_individuals_finishes_the_lapsed_steps_holding_them(tmp_path):
    """Population 3, tournament: a crashed worker killed two losers and wrote no children, so one is
    alive; a new worker's step cannot select until it has adopted and finished those steps itself."""
    config = synthetic(tmp_path, workers=1, population=3, steps=4, lease_seconds=0.3)
    store, config, space = open_run(config)
    crashed = Worker(store, config, space, worker_id="crashed")
    for _ in range(config.population):
        crashed.run_step(crashed.population.claim_next())
    for _ in range(2):
        crashed.population.refresh(force=True)
        step = crashed.population.claim_next(crashed.breeder.claim_chooser)
        assert crashed.population.settle_selection(step, crashed.breeder.chooser(step)) is not None
    assert len(Snapshot.read(store).live()) == 1

    time.sleep(0.4)  # the crashed worker's leases lapse
    survivor = Worker(store, config, space, worker_id="survivor")
    survivor.population.refresh(force=True)
    waiting = survivor.population.claim_next(survivor.breeder.claim_chooser)
    assert survivor.breeder.child(waiting) is None, "one live individual: nothing to select from yet"
    assert survivor.run_step(waiting) is True  # waits, adopting and finishing the two lapsed steps meanwhile
    assert survivor.stats.adopted == 2 and survivor.stats.steps == 3
    assert survivor.stats.steps_done[-1] == waiting, "the adopted steps were finished first"
    survivor.run()
    report = check_store(store, config.population, total_steps(config))
    assert report.ok and report.finished, report.violations


def test_an_idle_worker_looks_again_less_often_up_to_refresh_seconds():
    from evolve.engine.worker import _backoff

    waits, idle = [], 0.0
    for _ in range(8):
        idle = _backoff(idle, 1.0)
        waits.append(idle)
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert _backoff(0.0, 0.0) == _backoff(0.5, 0.0) == 0.01  # refresh_seconds 0: as quick as before
    assert _backoff(0.0, 0.2) == 0.05 and _backoff(0.1, 0.2) == 0.2


def _initial_population(tmp_path, steps: int, workers: int):
    config = synthetic(tmp_path, population=4, steps=steps, workers=workers, refresh_seconds=60.0)
    store, config, space = open_run(config)
    first = Worker(store, config, space, worker_id="first")
    for _ in range(config.population):
        first.run_step(first.population.claim_next())
    return store, config


def _ranked(store, config, rank: int):
    from evolve.engine.population import Population

    pop = Population(store, config.population, total_steps(config), f"w{rank}", 60.0, 60.0, config.workers, rank)
    pop.refresh(force=True)
    return pop


def test_workers_claiming_together_from_the_same_view_take_their_own_lanes(tmp_path):
    store, config = _initial_population(tmp_path, steps=40, workers=4)
    pops = [_ranked(store, config, rank) for rank in range(4)]  # identical views, none refreshed after
    claimed = [pop.claim_next() for pop in pops]
    assert sorted(claimed) == [4, 5, 6, 7] and [s % 4 for s in claimed] == [0, 1, 2, 3]
    assert [pop.claim_next() for pop in pops] == [8, 9, 10, 11]


def test_a_lane_two_rounds_behind_is_taken_and_a_finished_lane_waits(tmp_path):
    store, config = _initial_population(tmp_path, steps=8, workers=2)  # steps 4..11; rank 1 never comes
    pop = _ranked(store, config, 0)
    assert [pop.claim_next() for _ in range(6)] == [4, 6, 8, 5, 10, 7]
    assert pop.claim_next() is None, "its lane is done; 9 and 11 are only one round behind"
    other = _ranked(store, config, 1)
    assert [other.claim_next() for _ in range(3)] == [9, 11, None]


def test_heartbeats_are_listed_only_once_a_step_in_flight_is_older_than_a_quarter_lease(tmp_path):
    from evolve.engine.population import Population

    store, config = _initial_population(tmp_path, steps=8, workers=2)
    lease = 0.4
    holder = Population(store, config.population, total_steps(config), "holder", lease, 0.0)
    observer = Population(store, config.population, total_steps(config), "observer", lease, 0.0)
    listings = []
    real = store.list_versions_after
    store.list_versions_after = lambda *a, **k: listings.append(a) or real(*a, **k)
    assert observer.lapsed() == [] and listings == []  # nothing in flight
    holder.refresh(force=True)
    step = holder.claim_next()
    time.sleep(lease / 2)
    observer.refresh(force=True)
    assert observer.lapsed() == [] and listings == [], "first seen just now: a listing could show no beat yet"
    time.sleep(lease / 3)
    assert observer.lapsed() == [] and len(listings) == 1, "in flight for more than a quarter lease: look"
    deadline = time.monotonic() + 10 * lease
    while step not in observer.lapsed():  # it never beats: lapsed a lease after it was first seen
        assert time.monotonic() < deadline
        time.sleep(lease / 8)
