"""Golden files: what small seeded runs write, record by record, so a change in behaviour shows as a diff.

One worker, synthetic fitness (or a table's lookups): the run is deterministic. Every record of the store (claims,
selections, individuals, tombstones, generations, run.json) and the names of the log marks are
compared with ``tests/golden/<name>.json`` after normalising what legitimately differs from run to
run (times, nonces, process and machine ids, worker ids, the store's path).

A deliberate change of behaviour: rerun with ``EVOLVE_UPDATE_GOLDEN=1`` to rewrite the files, and
read their diff in review before committing it.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from evolve.config import build_config
from evolve.runner.launch import open_run, run_in_process

GOLDEN = Path(__file__).parent / "golden"
DROPPED = {"created_at", "nonce", "pid", "timings", "train_seconds", "eval_seconds", "host", "hostname",
           "refreshed_at", "heartbeat_at", "machine"}
WORKER_FIELDS = {"worker", "by", "holder"}

RUNS = {
    "tournament-dna": {"selection": "tournament", "population": 6, "steps": 14},
    "aging-dna": {"selection": "aging", "population": 6, "steps": 14, "sample_size": 3},
    "generational-gcnn": {"genome": "gcnn", "selection": "generational", "population": 4, "steps": 8,
                          "genome_options": {"nodes": [3, 4]}},
    "aging-nb201-table": {"genome": "nb201", "selection": "aging", "population": 6, "steps": 14, "sample_size": 3,
                          "fitness": "table:nb201-cifar10"},
    "random-nb201-table": {"genome": "nb201", "selection": "random", "population": 6, "steps": 14,
                           "fitness": "table:nb201-cifar10"},
}


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("W" if k in WORKER_FIELDS and value[k] is not None else normalised(v))
                for k, v in sorted(value.items()) if k not in DROPPED}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def store_contents(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = path.relative_to(root).as_posix()
        if key.startswith(("heartbeats/", "weights/")) or "/." in f"/{key}":
            continue
        if key.startswith("log/"):
            out.setdefault("log marks", []).append(key)
            continue
        record = normalised(json.loads(path.read_text()))
        if key == "run.json":
            record["config"]["store"] = "STORE"
        out[key] = record
    return out


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_seeded_run_writes_the_golden_records(tmp_path, name):
    settings = {"store": str(tmp_path / "run"), "fitness": "synthetic", "workers": 1, "seed": 7,
                "refresh_seconds": 0.0, "keep": "all", **RUNS[name]}
    store, config, space = open_run(build_config(settings))
    run_in_process(store, config, space)
    got = json.dumps(store_contents(tmp_path / "run"), indent=1, sort_keys=True) + "\n"
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("EVOLVE_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got)
    want = golden.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), str(golden), "this run", n=2))
        pytest.fail(f"the run's records differ from {golden.name} (EVOLVE_UPDATE_GOLDEN=1 rewrites it):\n"
                    + diff[:6000])
