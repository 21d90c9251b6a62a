"""Worker scaling with a synthetic fitness of fixed duration (issue 6, item 2).

Each evaluation sleeps ``--seconds`` (the engine's own ``fitness = "synthetic"`` with
``synthetic_seconds``), so W workers can at best finish W / seconds steps per second; what
keeps them below that is the engine and the store (listing, reading every new record,
create-once writes, selection conflicts), not the CPU.

Workers are separate processes, each running the real ``Worker.run`` loop, forked from a
forkserver that has already imported the engine (Ray would run the same ``Worker`` class,
but 32 Ray actor processes plus Ray's own daemons on a 2-core box measure Ray's memory and
scheduling, not the store). Start-up is kept out of the timed window twice over: every
process builds its worker and reads the initial population, then waits at a barrier; and
throughput is the sum of each worker's own rate between its first and last child (by
``created_at``), which leaves out start-up and the tail where workers run out of steps.

    python3 bench/scaling.py                  # 1..32 workers on a local folder
    python3 bench/scaling.py --backends file,s3
    python3 bench/scaling.py --smoke          # seconds
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_seconds, header, markdown_table, moto_server, s3_options, script_name
from bench.overhead import OpCounter, prefill
from evolve.config import RunConfig, build_config
from evolve.runner.launch import open_run
from evolve.store.backend import Store
from evolve.store.check import check_store
from evolve.training.evaluate import SyntheticEvaluator


def bucket(workers: int) -> str:
    return f"evolve-bench-scaling-{workers}"

START_TIMEOUT_S = 600.0


# -- one worker process ---------------------------------------------------------------------------


def worker_main(url: str, options: dict[str, Any], config_json: str, index: int, go: Any, results: Any) -> None:
    """A worker process: build the Worker, read the population, say so, wait for the start, run to the end."""
    from evolve.engine.worker import Worker
    from evolve.runner.launch import load_run

    try:
        store = Store(url, options)
        config = RunConfig.model_validate_json(config_json)
        _, space = load_run(store)
        ops = OpCounter(store)
        worker = Worker(store, config, space, worker_id=f"bench-{index}", rank=index)
        worker.population.refresh(force=True)
        results.put(("ready", index, None, None))
        if not go.wait(timeout=START_TIMEOUT_S):
            raise TimeoutError("no start signal")
        ops.reset(events=True)
        stats = asdict(worker.run())
        results.put(("done", index, {**stats, "ops": ops.total(), "lists": ops.lists(), "by_type": ops.by_type(),
                                         "folders": ops.folders, "events": ops.events},
                     None))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, never a hang
        results.put(("failed", index, None, f"{type(exc).__name__}: {exc}"))


def process_context() -> multiprocessing.context.BaseContext:
    """forkserver with the engine preloaded: 32 workers start in seconds and share its pages."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["evolve.engine.worker", "evolve.runner.launch", "bench.scaling"])
        return ctx
    return multiprocessing.get_context("spawn")


# -- one configuration ----------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    workers: int
    seconds: float
    children: int
    window: int
    throughput: float
    conflicts: int
    lost: int
    adopted: int
    ops_per_step: float
    by_type: dict[str, float]  # requests per step, by type
    steady_ops: float  # requests per step between each worker's first and last child (see steady_requests)
    server_cpu: float | None  # the moto server's CPU use while the workers ran (1.0 = one core)
    check_ok: bool

    @property
    def ideal(self) -> float:
        return self.workers / self.seconds

    @property
    def efficiency(self) -> float:
        return self.throughput / self.ideal


def measure(backend: str, url: str, options: dict[str, Any], workers: int, args: argparse.Namespace,
            server_pid: int | None = None) -> Row:
    steps = workers * (args.rounds + 2)
    config = build_config({"store": url, "storage_options": options, "fitness": "synthetic",
                           "synthetic_seconds": args.seconds, "population": args.population, "steps": steps,
                           "workers": workers})
    store, config, space = open_run(config)
    prefill(store, config, space, SyntheticEvaluator(space, 0.0), threads=min(16, args.population))
    cpu_before, started = (cpu_seconds(server_pid) if server_pid else None), time.monotonic()
    stats = run_workers(url, options, config, workers)
    folders: dict[str, int] = {}
    for s in stats:
        for name, count in s.get("folders", {}).items():
            folders[name] = folders.get(name, 0) + count
    cpu_after, wall = (cpu_seconds(server_pid) if server_pid else None), time.monotonic() - started
    server_cpu = (cpu_after - cpu_before) / wall if cpu_before is not None and cpu_after is not None else None
    records = [store.read_json(k) for k in store.list_keys("individuals/")]
    children = [r for r in records if r and r["step"] >= config.population]
    throughput, timed = steady_rate(children)
    print(f"  {backend}, {workers} workers, requests per step by folder: "
          + ", ".join(f"{k} {v / max(1, len(children)):.2f}" for k, v in sorted(folders.items())),
          file=sys.stderr, flush=True)
    steady, steady_folders = steady_requests(stats, children)
    print(f"  {backend}, {workers} workers, steady state: {steady:.2f} requests per step: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(steady_folders.items())), file=sys.stderr, flush=True)
    report = check_store(store, config.population, config.population + config.steps)
    if not (report.ok and report.finished):
        print(f"check_store on {url}: {report.violations[:5]} finished={report.finished}", file=sys.stderr)
    return Row(backend, workers, args.seconds, len(children), timed, throughput,
               conflicts=sum(1 for r in children if (r.get("attempt") or 0) > 0),
               lost=sum(s["lost"] for s in stats), adopted=sum(s["adopted"] for s in stats),
               ops_per_step=sum(s["ops"] for s in stats) / max(1, len(children)),
               by_type={t: sum(s["by_type"][t] for s in stats) / max(1, len(children)) for t in OpCounter.TYPES.values()},
               steady_ops=steady,
               server_cpu=server_cpu,
               check_ok=report.ok and report.finished)


def steady_rate(children: Sequence[dict[str, Any]]) -> tuple[float, int]:
    """Steps per second of the whole run: the sum of each worker's own rate between its first and last child.

    Each worker's consecutive children are one step apart, so (n - 1) / (last - first) is its rate
    with no start-up (its first child) and no tail (workers run out of steps at different times).
    Counting all children between two instants instead would be biased upwards: workers that start
    together finish their rounds together, and the window would hold one round more than it spans.
    """
    by_worker: dict[str, list[float]] = {}
    for record in children:
        by_worker.setdefault(record["worker"], []).append(record["created_at"])
    rate, timed = 0.0, 0
    for times in by_worker.values():
        times.sort()
        if len(times) >= 3 and times[-1] > times[0]:
            rate += (len(times) - 1) / (times[-1] - times[0])
            timed += len(times)
    if timed == 0:
        raise RuntimeError(f"only {len(children)} children, too few per worker to time (raise --rounds)")
    return rate, timed


def steady_requests(stats: Sequence[dict[str, Any]], children: Sequence[dict[str, Any]]
                    ) -> tuple[float, dict[str, float]]:
    """Requests per step with the start and the tail left out, as :func:`steady_rate` leaves them out
    of throughput: each worker's requests between its first and last child, over the steps between.

    The whole-run figure also counts each worker's first claim (all at once) and its idle polling
    once no step is left to claim, which a 20,000-step run spreads over 600 times as many steps
    as this bench's 12 per worker.
    """
    by_worker: dict[str, list[float]] = {}
    for record in children:
        by_worker.setdefault(record["worker"], []).append(record["created_at"])
    requests, steps, folders = 0, 0, {}
    for s in stats:
        times = sorted(by_worker.get(s["worker"], []))
        if len(times) < 3:
            continue
        steps += len(times) - 1
        for at, where, count in s["events"]:
            if times[0] < at <= times[-1]:
                requests += count
                folders[where] = folders.get(where, 0) + count
    steps = max(1, steps)
    return requests / steps, {k: v / steps for k, v in folders.items()}


def run_workers(url: str, options: dict[str, Any], config: RunConfig, workers: int) -> list[dict[str, Any]]:
    ctx = process_context()
    go = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(url, options, config.model_dump_json(), i, go, results),
                         daemon=True) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        collect(results, procs, "ready")
        go.set()
        return [stat for _, _, stat, _ in collect(results, procs, "done")]
    finally:
        release(go, procs)


def release(go: Any, procs: Sequence[Any]) -> None:
    """Let every worker process go (a failed start must not leave them waiting) and reap them."""
    go.set()
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join()


def collect(results: Any, procs: Sequence[Any], kind: str) -> list[tuple]:
    """One ``kind`` message from every worker; a failure, or a process that died silently, raises."""
    got: dict[int, tuple] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(got) < len(procs):
        try:
            message = results.get(timeout=1.0)
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode is not None and i not in got]
            if dead and results.empty():
                raise RuntimeError(f"worker processes {dead} exited (codes "
                                   f"{[procs[i].exitcode for i in dead]}) before '{kind}'") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(set(range(len(procs))) - set(got))} never reached '{kind}'")
            continue
        if message[0] == "failed":
            raise RuntimeError(f"worker {message[1]}: {message[3]}")
        if message[0] == kind:
            got[message[1]] = message
    return list(got.values())


# -- the table ------------------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    columns = ["backend", "workers", "fitness s", "children timed", "steps/s", "ideal steps/s", "efficiency",
               "vs 1 worker x W", "selection retries", "lost", "adopted", "store ops/step",
               *(f"{t}/step" for t in dict.fromkeys(OpCounter.TYPES.values())), "vs 1 worker",
               "steady ops/step", "steady vs 1 worker", "server CPU", "check"]
    ops_one = {r.backend: r.ops_per_step for r in rows if r.workers == 1}
    steady_one = {r.backend: r.steady_ops for r in rows if r.workers == 1}
    single = {r.backend: r.throughput for r in rows if r.workers == 1}
    out = []
    for r in rows:
        vs_one = r.throughput / (single[r.backend] * r.workers) if r.backend in single else None
        out.append([r.backend, r.workers, r.seconds, r.window, r.throughput, r.ideal, f"{100 * r.efficiency:.1f}%",
                    None if vs_one is None else f"{100 * vs_one:.1f}%", r.conflicts, r.lost, r.adopted,
                    r.ops_per_step, *(r.by_type[t] for t in dict.fromkeys(OpCounter.TYPES.values())),
                    f"{r.ops_per_step / ops_one[r.backend]:.2f}x" if r.backend in ops_one else None,
                    r.steady_ops, f"{r.steady_ops / steady_one[r.backend]:.2f}x" if r.backend in steady_one else None,
                    None if r.server_cpu is None else f"{100 * r.server_cpu:.0f}%", r.check_ok])
    return markdown_table(columns, out)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,4,8,16,32", help="comma-separated worker counts")
    p.add_argument("--seconds", type=float, default=1.0, help="duration of each synthetic evaluation")
    p.add_argument("--rounds", type=int, default=10, help="steps per worker in the timed window (about)")
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--backends", default="file", help="comma-separated: file, s3 (moto on 127.0.0.1)")
    p.add_argument("--workdir", default=None, help="where the stores go (default: a fresh temp folder)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.workers, args.seconds, args.rounds, args.population = "1,2", 0.1, 3, 10
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(backends) - {"file", "s3"}:
        raise SystemExit(f"--backends: unknown {sorted(set(backends) - {'file', 's3'})} (expected file, s3)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evolve-bench-scaling-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(header(script_name(__file__), argv), flush=True)
    print(f"synthetic fitness {args.seconds} s per step, population {args.population}, "
          f"about {args.rounds} timed steps per worker; workers are processes", flush=True)
    rows: list[Row] = []
    try:
        if "file" in backends:
            for w in counts:
                rows.append(measure("file", str(workdir / f"file-{w}"), {}, w, args))
                print(f"  file, {w} workers: {rows[-1].throughput:.2f} steps/s", file=sys.stderr, flush=True)
        if "s3" in backends:
            with moto_server([bucket(w) for w in counts]) as endpoint:
                for w in counts:  # a bucket each: moto's listing cost grows with everything in the bucket
                    rows.append(measure("s3 (moto)", f"s3://{bucket(w)}/run", s3_options(endpoint), w, args,
                                        server_pid=endpoint.pid))
                    print(f"  s3, {w} workers: {rows[-1].throughput:.2f} steps/s", file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(rows))
    ok = all(r.check_ok for r in rows)
    print(f"\ncheck_store: {'every store passes' if ok else 'VIOLATIONS (see stderr)'}")
    print(json.dumps({"efficiency": {f"{r.backend}:{r.workers}": round(r.efficiency, 4) for r in rows}}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
