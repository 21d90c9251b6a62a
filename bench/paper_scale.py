"""The paper's scale, simulated: population 1,000, 250 concurrent workers, 20,000 steps (issue 12, item 4).

Real et al. ran 250 workers over a population of 1,000. Here every worker is a thread of this
process running the real ``Worker.run`` loop against one store, with the engine's synthetic
fitness (``--seconds`` of sleep per evaluation, 5 by default: the ideal is workers / seconds =
50 steps/s). What is measured is the engine and the store at that concurrency: throughput
against the ideal (the sum of each worker's own rate between its first and last child, as
``bench/scaling.py``), store requests per step by type, selection retries, and violations,
checked twice: ``evolve check`` and an independent reading of the raw records below.

    python3 bench/paper_scale.py                     # file://, the full size (about 8 minutes)
    python3 bench/paper_scale.py --backend s3 --steps 2000
    python3 bench/paper_scale.py --smoke             # seconds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, moto_server, s3_options, script_name
from bench.overhead import OpCounter
from bench.scaling import steady_rate
from evolve.check import check_store
from evolve.config import build_config
from evolve.run import open_run
from evolve.store import Store, step_of
from evolve.worker import Worker


def raw_violations(store: Store, population: int, total: int) -> list[str]:
    """The invariants read straight from the records, without evolve.check or the views."""
    children = {step_of(k): store.read_json(k) for k in store.list_keys("individuals/")}
    deaths = {step_of(k): store.read_json(k) for k in store.list_keys("deaths/")}
    out = []
    if sorted(children) != list(range(total)):
        out.append(f"{len(children)} children, expected steps 0..{total - 1}")
    killers = Counter(d["killed_at_step"] for d in deaths.values())
    out += [f"step {s} killed {n}" for s, n in killers.items() if n > 1]
    for dead, death in deaths.items():
        child = children.get(death["killed_at_step"])
        if child is None or child.get("loser") != dead:
            out.append(f"death of {dead}: step {death['killed_at_step']}'s child names {child and child.get('loser')}")
    for step, child in children.items():
        if step >= population and (child.get("loser") not in deaths or not child.get("parents")):
            out.append(f"child {step}: loser {child.get('loser')} not dead or no parent")
    if len(children) - len(deaths) != population:
        out.append(f"{len(children) - len(deaths)} live, expected {population}")
    return out


def simulate(url: str, options: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    config = build_config({"store": url, "storage_options": options, "fitness": "synthetic",
                           "synthetic_seconds": args.seconds, "population": args.population, "steps": args.steps,
                           "workers": args.workers, "refresh_seconds": 1.0})
    store, config, space = open_run(config)
    ops = OpCounter(store)
    workers = [Worker(store, config, space, worker_id=f"sim-{i}") for i in range(args.workers)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    started = time.monotonic()
    for t in threads:
        t.start()
    shown = started
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if args.progress and time.monotonic() - shown >= 30:
            shown = time.monotonic()
            done = sum(w.stats.steps for w in workers)
            print(f"  {done:,} / {args.population + args.steps:,} individuals, {shown - started:.0f} s",
                  file=sys.stderr, flush=True)
    wall = time.monotonic() - started
    by_type = ops.by_type()
    records = [store.read_json(k) for k in store.list_keys("individuals/")]
    children = [r for r in records if r and r["step"] >= config.population]
    rate, timed = steady_rate(children)
    report = check_store(store, config.population, config.population + config.steps)
    raw = raw_violations(store, config.population, config.population + config.steps)
    n = max(1, len(records))
    return {"workers": args.workers, "population": args.population, "steps": args.steps, "seconds": args.seconds,
            "wall_s": wall, "steps_per_s": rate, "ideal": args.workers / args.seconds,
            "efficiency": rate / (args.workers / args.seconds), "timed": timed,
            "retries": sum(1 for r in children if (r.get("attempt") or 0) > 0),
            "lost": sum(w.stats.lost for w in workers), "adopted": sum(w.stats.adopted for w in workers),
            "requests_per_step": ops.total() / n, **{f"{k}/step": v / n for k, v in by_type.items()},
            "weights_files": len(store.list_keys("weights/")),
            "check": "clean" if report.ok and report.finished else f"{len(report.violations)} violations",
            "raw_check": "clean" if not raw else f"{len(raw)}: {raw[:3]}"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=250)
    p.add_argument("--population", type=int, default=1_000)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each synthetic evaluation")
    p.add_argument("--backend", choices=("file", "s3"), default="file")
    p.add_argument("--workdir", default=None, help="where the store goes (default: a fresh temp folder)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.workers, args.population, args.steps, args.seconds, args.progress = 8, 20, 60, 0.05, False
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    print(header(script_name(__file__), argv), flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evolve-bench-paper-"))
    try:
        if args.backend == "file":
            row = simulate(str(workdir / "run"), {}, args)
        else:
            with moto_server(["evolve-bench-paper"]) as endpoint:
                row = simulate("s3://evolve-bench-paper/run", s3_options(endpoint), args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(markdown_table(list(row), [list(row.values())]))
    print(json.dumps({"efficiency": round(row["efficiency"], 4), "check": row["check"], "raw_check": row["raw_check"]}))
    return 0 if row["check"] == "clean" and row["raw_check"] == "clean" else 1


if __name__ == "__main__":
    raise SystemExit(main())
