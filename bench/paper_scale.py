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
import dataclasses
import json
import logging
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
from bench.scaling import START_TIMEOUT_S, collect, process_context, release, steady_rate
from evolve.config import RunConfig, build_config
from evolve.engine.worker import Worker
from evolve.runner.launch import load_run, open_run
from evolve.store.backend import Store
from evolve.store.check import check_store
from evolve.store.keys import step_of
from evolve.training.evaluate import Outcome, SyntheticEvaluator


def raw_violations(store: Store, population: int, total: int) -> list[str]:
    """The invariants read straight from the records, without evolve.store.check or the views."""
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


class WithWeights:
    """The synthetic fitness, with a weights blob per child (``bytes`` long), so that every step also
    writes and inherits weights and the workers' garbage collection runs as in a real run."""

    def __init__(self, inner: SyntheticEvaluator, size: int) -> None:
        self.inner = inner
        self.blob = bytes(size)

    def evaluate(self, genome: Any, parent_weights: bytes | None, seed: int, mutation: Any = None) -> Outcome:
        outcome = self.inner.evaluate(genome, parent_weights, seed, mutation)
        return dataclasses.replace(outcome, weights=self.blob) if self.blob else outcome


class MissingWeights(logging.Handler):
    """Counts parents whose weights a worker found missing (garbage collection deleted one still needed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "missing or corrupt" in record.getMessage():
            self.count += 1


def worker_process(url: str, options: dict[str, Any], config_json: str, index: int, first: int, count: int,
                   weights_bytes: int, go: Any, results: Any) -> None:
    """``count`` workers as threads of one process (worker ids ``sim-<first>`` on), run to the end."""
    try:
        store = Store(url, options)
        config = RunConfig.model_validate_json(config_json)
        _, space = load_run(store)
        ops = OpCounter(store)
        missing = MissingWeights()
        logging.getLogger("evolve.engine.worker").addHandler(missing)
        evaluator = WithWeights(SyntheticEvaluator(space, config.synthetic_seconds), weights_bytes)
        workers = [Worker(store, config, space, worker_id=f"sim-{first + i}", evaluator=evaluator,
                          rank=first + i)
                   for i in range(count)]
        for w in workers:
            w.population.refresh(force=True)
        results.put(("ready", index, None, None))
        if not go.wait(timeout=START_TIMEOUT_S):
            raise TimeoutError("no start signal")
        ops.reset()
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = [w.stats for w in workers]
        results.put(("done", index, {"lost": sum(s.lost for s in stats), "adopted": sum(s.adopted for s in stats),
                                     "by_type": ops.by_type(), "ops": ops.total(), "read": ops.bytes_read,
                                     "written": ops.bytes_written, "missing": missing.count}, None))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, never a hang
        results.put(("failed", index, None, f"{type(exc).__name__}: {exc}"))


def run_processes(url: str, options: dict[str, Any], config: RunConfig,
                  args: argparse.Namespace) -> tuple[list, float, int]:
    """The workers split over ``args.processes`` processes: their stats, the wall time from the start
    signal, and the most weight files seen in the store at once (sampled)."""
    ctx = process_context()
    go, results = ctx.Event(), ctx.Queue()
    shares = [len(range(i, args.workers, args.processes)) for i in range(min(args.processes, args.workers))]
    firsts = [sum(shares[:i]) for i in range(len(shares))]
    procs = [ctx.Process(target=worker_process, args=(url, options, config.model_dump_json(), i, first, n,
                                                      args.weights_bytes, go, results),
                         daemon=True) for i, (first, n) in enumerate(zip(firsts, shares))]
    for p in procs:
        p.start()
    try:
        collect(results, procs, "ready")
        store, total = Store(url, options), config.population + config.steps
        go.set()
        started = shown = time.monotonic()
        peak = 0
        while any(p.is_alive() for p in procs):
            time.sleep(0.5 if store.local else 5.0)
            peak = max(peak, len(store.list_keys("weights/")))
            if args.progress and time.monotonic() - shown >= 30:
                shown = time.monotonic()
                done = len(store.list_keys("individuals/"))
                print(f"  {done:,} / {total:,} individuals, {peak:,} weight files at most, {shown - started:.0f} s",
                      file=sys.stderr, flush=True)
        stats = [stat for _, _, stat, _ in collect(results, procs, "done")]
        return stats, time.monotonic() - started, peak
    finally:
        release(go, procs)


def simulate(url: str, options: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    config = build_config({"store": url, "storage_options": options, "fitness": "synthetic",
                           "synthetic_seconds": args.seconds, "population": args.population, "steps": args.steps,
                           "workers": args.workers, "refresh_seconds": 1.0})
    store, config, _space = open_run(config)
    stats, wall, peak = run_processes(url, options, config, args)
    by_type: Counter = Counter()
    for stat in stats:
        by_type.update(stat["by_type"])
    records = [store.read_json(k) for k in store.list_keys("individuals/")]
    children = [r for r in records if r and r["step"] >= config.population]
    rate, timed = steady_rate(children)
    report = check_store(store, config.population, config.population + config.steps)
    raw = raw_violations(store, config.population, config.population + config.steps)
    n = max(1, len(records))
    return {"workers": args.workers, "processes": args.processes, "population": args.population,
            "steps": args.steps, "seconds": args.seconds,
            "wall_s": wall, "steps_per_s": rate, "ideal": args.workers / args.seconds,
            "efficiency": rate / (args.workers / args.seconds), "timed": timed,
            "retries": sum(1 for r in children if (r.get("attempt") or 0) > 0),
            "lost": sum(s["lost"] for s in stats), "adopted": sum(s["adopted"] for s in stats),
            "requests_per_step": sum(s["ops"] for s in stats) / n, **{f"{k}/step": v / n for k, v in by_type.items()},
            "bytes written/step": sum(s["written"] for s in stats) / n, "bytes read/step": sum(s["read"] for s in stats) / n,
            "peak weight files": peak, "weight files at the end": len(store.list_keys("weights/")),
            "parent weights missing": sum(s["missing"] for s in stats),
            "check": "clean" if report.ok and report.finished else f"{len(report.violations)} violations",
            "raw_check": "clean" if not raw else f"{len(raw)}: {raw[:3]}"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=250)
    p.add_argument("--population", type=int, default=1_000)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each synthetic evaluation")
    p.add_argument("--processes", type=int, default=10, help="the workers run as threads of this many processes")
    p.add_argument("--weights-bytes", type=int, default=2048,
                   help="a weights blob per child (0: none); the workers' garbage collection deletes dead ones")
    p.add_argument("--backend", choices=("file", "s3"), default="file")
    p.add_argument("--workdir", default=None, help="where the store goes (default: a fresh temp folder)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.workers, args.processes, args.population, args.steps, args.seconds, args.progress = 8, 2, 20, 60, 0.05, False
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
    print(json.dumps({"efficiency": round(row["efficiency"], 4), "check": row["check"], "raw_check": row["raw_check"],
                      "parent weights missing": row["parent weights missing"]}))
    ok = row["check"] == "clean" and row["raw_check"] == "clean" and row["parent weights missing"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
