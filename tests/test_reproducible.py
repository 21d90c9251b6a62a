"""Reproducible steps: the same run seed and step give byte-identical weights, whichever executor ran
them and whatever else the process trains meanwhile (torch on one thread, as conftest.py pins it).

Genetic CNN's dropout is the draw that used to race: it took torch's process-global generator,
which workers running as threads of one process share.
"""

from __future__ import annotations

import threading

import pytest
import torch

from evolve.config import build_config
from evolve.engine.worker import Worker
from evolve.runner.launch import open_run, run_in_process
from evolve.store.snapshot import Snapshot

GCNN = {"genome": "gcnn", "genome_options": {"nodes": [3, 3], "channels": [8, 16]}}


def _config(tmp_path, name: str, **kw):
    base = {"store": str(tmp_path / name), "dataset": "digits", "population": 4, "steps": 6, "workers": 2,
            "train": {"batches": 8, "device": "cpu"}, "final_batches": 0, "keep": "all",
            "refresh_seconds": 0.0}
    return build_config({**base, **kw})


def stored_weights(store) -> dict[int, bytes]:
    """Every individual's weights as stored, by step."""
    out = {}
    for step, record in Snapshot.read(store).individuals.items():
        if record.get("weights"):
            out[step] = store.read_bytes(record["weights"]["key"])
    return out


def replays(store, config, space, steps) -> dict[int, bytes | None]:
    worker = Worker(store, config, space, worker_id="replay")
    return {step: worker.replay(step).weights for step in steps}


def test_a_four_thread_run_writes_the_same_initial_population_run_to_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        store, config, space = open_run(_config(tmp_path, name, population=8, steps=0, workers=4, **GCNN))
        run_in_process(store, config, space)
        runs.append(stored_weights(store))
    assert sorted(runs[0]) == list(range(8))
    differ = [step for step in runs[0] if runs[0][step] != runs[1][step]]
    assert not differ, f"initial individuals {differ} trained to different weights"


@pytest.mark.parametrize("extra", [{}, GCNN], ids=["dna", "gcnn"])
def test_a_recorded_step_replays_byte_for_byte_beside_other_working_threads(tmp_path, extra):
    store, config, space = open_run(_config(tmp_path, "run", **extra))
    run_in_process(store, config, space)
    recorded = stored_weights(store)
    records = Snapshot.read(store).individuals
    assert any(records[s]["parents"] for s in recorded), "the run should have children to replay"
    if extra:
        assert any(r.get("mutation") for r in records.values())
    else:
        assert any(records[s]["metrics"].get("inherited", 0) > 0 for s in recorded), "a child inherited weights"

    stop, started = threading.Event(), []

    def contend() -> None:  # other runs' workers training Genetic-CNN children (dropout) all the while
        while not stop.is_set():
            started.append(len(started))
            run_in_process(*open_run(_config(tmp_path, f"busy-{len(started)}", workers=3, population=6, **GCNN)))

    contender = threading.Thread(target=contend, daemon=True)
    contender.start()
    try:
        again = replays(store, config, space, sorted(recorded))
        assert contender.is_alive() and started, "the replay should overlap other training"
    finally:
        stop.set()
        contender.join(timeout=120)
    differ = [step for step in recorded if again[step] != recorded[step]]
    assert not differ, f"steps {differ} replayed to different weights"


def test_a_step_trained_after_a_resume_replays_byte_for_byte(tmp_path):
    store, config, space = open_run(_config(tmp_path, "run", steps=3))
    run_in_process(store, config, space)
    store, config, space = open_run(config, resume=True, overrides={"steps": 8})
    assert config.steps == 8
    run_in_process(store, config, space)
    recorded = stored_weights(store)
    after = [step for step in recorded if step >= 4 + 3]
    assert after, "the resumed run should have trained children"
    again = replays(store, config, space, after)
    assert all(again[step] == recorded[step] for step in after)


def test_checking_a_space_in_another_thread_never_moves_a_childs_initialisation():
    """space_for builds a network to check the genome serves the input shape; it must not draw from torch's
    global generator while a worker thread of the same process seeds and builds a child."""
    import random

    from evolve.runner.record import check_serves
    from evolve.training.train import build_module
    from genomes import SearchSpace, genome_class

    space = SearchSpace(input_shape=(1, 28, 28), num_classes=10, options={"initial_convs": 3, "morphisms": True})
    genome = genome_class("dna").initial(random.Random(0), space)
    reference = [t.clone() for t in build_module(genome, (1, 28, 28), 10, 7).state_dict().values()]
    stop = threading.Event()

    def check_forever() -> None:
        while not stop.is_set():
            check_serves("dna", space)

    checker = threading.Thread(target=check_forever, daemon=True)
    checker.start()
    try:
        for _ in range(100):
            built = list(build_module(genome, (1, 28, 28), 10, 7).state_dict().values())
            assert all(torch.equal(a, b) for a, b in zip(reference, built))
    finally:
        stop.set()
        checker.join()
