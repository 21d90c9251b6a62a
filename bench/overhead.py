"""Engine overhead per step: everything a worker does except training (issue 6, item 1).

For each backend (a local folder; S3 through a moto server on 127.0.0.1) and population size P,
a store is filled with P live individuals by the engine itself (``Worker.run_step`` on steps
0..P-1, each claimed through ``Population.claim``, many threads at once), then one worker
runs steady-state steps of the real engine, as ``Worker.run`` does: refresh its view, claim with a
tournament on a random pair in the claim, tombstone the loser, read the parent's record and
weights, mutate the DNA genome; then "train" (``--train-ms`` of busy work, with a weights blob of
a real demo child) while the writer thread writes the previous child's weights and record. What is
timed is the step's wall time minus the training: the engine's critical path.

A claim refreshes the view when it is older than ``refresh_seconds`` (1 s by default), or when
it collides: one listing of the log marks past the watermark ("refresh ms", averaged over every
step; the rest of the claim is "claim ms"). ``--refresh-seconds 0`` refreshes at every claim.

Next to it, on the same disk in the same run, the peer a user would pick instead: an Optuna study
on its journal-file storage (RandomSampler), ms per ask+tell after P finished trials (with
``pip install -e '.[bench]'``). ``--genome gcnn --optuna-params 0,4,space`` puts both on one search
space: the engine evolves Genetic CNN's bitstrings, and the study declares the same space as a user
would, a 0/1 parameter per connection bit (19 for the default stages).

The demo's step time is measured by running the demo itself (``evolve run`` with every default
but ``--steps``): the mean ``timings.total_s`` of its children's records.

    python3 bench/overhead.py                 # the full table (several minutes)
    python3 bench/overhead.py --smoke         # seconds: tiny sizes, checks the machinery
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, markdown_table, moto_server, percentile, s3_options, script_name
from evolve.config import RunConfig, build_config
from evolve.engine.worker import Worker
from evolve.runner.launch import open_run
from evolve.seeding import rng_for
from evolve.store.backend import Store
from evolve.store.check import check_store
from evolve.training.evaluate import Evaluator, Outcome
from genomes import Genome, SearchSpace


def bucket(population: int) -> str:
    return f"evolve-bench-overhead-{population}"


# -- the stand-in for training ----------------------------------------------------------------


class InstantEvaluator:
    """Training replaced by nothing: a seeded fitness and a real demo child's weights, at once."""

    def __init__(self, weights: bytes) -> None:
        self.weights = weights

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int, mutation=None) -> Outcome:
        fitness = rng_for(seed, "bench-overhead").random()
        return Outcome(fitness=fitness, val_accuracy=fitness, weights=self.weights)


_BLOCK = bytes(1 << 20)


def busy(seconds: float) -> float:
    """Keep one core busy for ``seconds`` without holding the GIL, as training does (hashing a 1 MB
    block releases it): a sleep would let the CPU and disk idle, and the first fsync after an idle
    costs about twice as much on this VM. Returns the time it took."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        hashlib.sha256(_BLOCK).digest()
    return time.perf_counter() - started


class BusyEvaluator(InstantEvaluator):
    """As :class:`InstantEvaluator`, after ``seconds`` of :func:`busy` work: a training that hides the
    child's write, which a worker does in the background while its next step trains."""

    def __init__(self, weights: bytes, seconds: float) -> None:
        super().__init__(weights)
        self.seconds = seconds
        self.spent: list[float] = []  # how long each evaluation took, to take it out of the step's time

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int, mutation=None) -> Outcome:
        started = time.perf_counter()
        busy(self.seconds)
        outcome = super().evaluate(genome, parent_weights, seed, mutation)
        self.spent.append(time.perf_counter() - started)
        return outcome


# -- the demo's step time ---------------------------------------------------------------------


@dataclass
class Demo:
    step_s: float  # mean timings.total_s of the children
    median_step_s: float
    wall_per_step_s: float  # the run's wall time x workers / individuals
    weights: bytes  # the largest child's weights (safetensors bytes)
    median_weights_bytes: int
    how: str


def measure_demo(workdir: Path, steps: int, smoke: bool) -> Demo:
    """Run the demo (``evolve run``, defaults but --steps) and read its records' step times.

    ``smoke``: a handful of tiny trainings in this process instead (seconds, not minutes).
    """
    store = workdir / "demo"
    started = time.perf_counter()
    if smoke:
        from evolve.runner.launch import run_in_process

        config = build_config({"store": str(store), "population": 4, "steps": steps, "train": {"batches": 3}})
        run_in_process(*open_run(config))
        what = f"a tiny in-process demo (population 4, {steps} steps, 3 batches): NOT the demo's step time"
    else:
        cmd = ["evolve", "run", "--store", str(store), "--steps", str(steps)]
        done = subprocess.run([sys.executable, "-m", "evolve.cli.main", *cmd[1:]], check=False, capture_output=True,
                              text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"demo run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        what = f"`{' '.join(cmd)}`"
    wall = time.perf_counter() - started
    run = json.loads((store / "run.json").read_text())["config"]
    records = [json.loads(p.read_text()) for p in sorted((store / "individuals").glob("*.json"))]
    children = [r for r in records if r["step"] >= run["population"]]
    totals = [r["timings"]["total_s"] for r in children]
    created = [r["created_at"] for r in records]
    with_weights = sorted((r for r in children if r.get("weights") and (store / r["weights"]["key"]).exists()),
                          key=lambda r: r["weights"]["bytes"])  # the run's workers deleted dead ones
    if not with_weights:
        raise RuntimeError(f"the demo run at {store} wrote no weights")
    biggest = (store / with_weights[-1]["weights"]["key"]).read_bytes()
    how = (f"{what}: mean timings.total_s of its {len(children)} children (population {run['population']}, "
           f"{run['workers']} workers, {run['train']['batches']} batches; {wall:.0f} s in all)")
    return Demo(step_s=statistics.mean(totals), median_step_s=statistics.median(totals),
                wall_per_step_s=(max(created) - min(created)) * run["workers"] / max(1, len(records) - 1),
                weights=biggest, median_weights_bytes=with_weights[len(with_weights) // 2]["weights"]["bytes"],
                how=how)


# -- what the disk charges for one durable record ---------------------------------------------------

TMPFS = "/dev/shm"


def create_cost(folder: Path, size: int, count: int = 200) -> float:
    """Mean ms of ``Store.create`` on ``folder``'s disk: what each of a step's 5 records pays there."""
    store = Store(str(folder))
    data = os.urandom(size)
    started = time.perf_counter()
    for i in range(count):
        store.create(f"probe/{i:06d}.bin", data)
    elapsed = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return 1000 * elapsed / count


# -- filling a store with P live individuals ----------------------------------------------------


def prefill(store: Store, config: RunConfig, space: SearchSpace, evaluator: Evaluator, threads: int) -> float:
    """Steps 0..P-1 by the engine (claim, heartbeat, weights, record), ``threads`` workers at once."""
    errors: list[BaseException] = []

    def fill(index: int) -> None:
        worker = Worker(store, config, space, worker_id=f"prefill-{index}", evaluator=evaluator)
        pop = worker.population
        try:
            for step in range(index, config.population, threads):
                if not pop.claim(step):  # disjoint steps per thread: no claim races to lose
                    raise RuntimeError(f"prefill: could not claim step {step}")
                if not worker.run_step(step):
                    raise RuntimeError(f"prefill: step {step}'s child was not ours")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    started = time.perf_counter()
    pool = [threading.Thread(target=fill, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


# -- timing steps -----------------------------------------------------------------------------------


class OpCounter:
    """Counts the store's own I/O calls (on S3 each is one request; a listing is one per 1,000 keys; a
    local listing, one call whatever it returns).

    Listings are also timed, with the keys they return: on a real object store a listing's cost
    follows what it returns; moto's follows the size of the bucket.
    """

    OPS = ("read_bytes", "_raw_create", "put_json", "exists", "list_keys", "list_keys_after", "list_versions_after",
           "list_folder", "list_names", "delete")
    LISTS = ("list_keys", "list_keys_after", "list_versions_after", "list_folder", "list_names")
    TYPES = {"read_bytes": "get", "_raw_create": "create", "put_json": "put", "exists": "head", "list_keys": "list",
             "list_keys_after": "list", "list_versions_after": "list", "list_folder": "list", "list_names": "list",
             "delete": "delete"}
    PAGE = 1000  # keys per listing page (S3): a listing that returns more costs one request per page

    def __init__(self, store: Store) -> None:
        self._lock = threading.Lock()
        self.reset()
        self.paged = not store.local  # a local listing is one call whatever it returns
        for name in self.OPS:
            setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result: Any = ()
            try:
                result = real(*args, **kwargs)
            finally:  # a request that failed (a create that found its key taken) was still a request
                self._count(name, args, result, started)
            return result

        return call

    def _count(self, name: str, args: tuple, result: Any, started: float) -> None:
        paged = name in self.LISTS and self.paged
        requests = max(1, -(-len(result or ()) // self.PAGE)) if paged else 1
        where = f"{self.TYPES[name]} {str(args[0]).split('/', 1)[0] if args else '?'}"
        body = 0  # object bytes sent or received (listing responses not counted)
        if name == "_raw_create" and len(args) > 1 and isinstance(args[1], (bytes, bytearray)):
            body = len(args[1])
        elif name == "put_json" and len(args) > 1:
            body = len(json.dumps(args[1]))
        with self._lock:
            self.counts[name] += requests
            self.folders[where] = self.folders.get(where, 0) + requests
            if name == "read_bytes" and isinstance(result, (bytes, bytearray)):
                self.bytes_read += len(result)
            self.bytes_written += body
            if self.events is not None:
                self.events.append((time.time(), where, requests))
            if name in self.LISTS:
                self.list_seconds += time.perf_counter() - started
                self.listed += len(result or ())

    def reset(self, events: bool = False) -> None:
        """Zero the counts; with ``events``, also keep (wall time, "type folder", requests) for each call."""
        with self._lock:
            self.events: list[tuple[float, str, int]] | None = [] if events else None
            self.counts = dict.fromkeys(self.OPS, 0)
            self.folders: dict[str, int] = {}  # "get individuals" -> calls
            self.bytes_read = self.bytes_written = 0
            self.list_seconds = 0.0
            self.listed = 0

    def total(self) -> int:
        return sum(self.counts.values())

    def by_type(self) -> dict[str, int]:
        """Requests by type (get, create, put, head, list, delete)."""
        out = dict.fromkeys(dict.fromkeys(self.TYPES.values()), 0)
        with self._lock:
            for name, count in self.counts.items():
                out[self.TYPES[name]] += count
        return out

    def lists(self) -> int:
        return sum(self.counts[name] for name in self.LISTS)


@dataclass
class Timed:
    overhead_ms: list[float] = field(default_factory=list)
    refresh_ms: list[float] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    select_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)


def timed_steps(worker: Worker, count: int, timed: Timed | None, evaluator: BusyEvaluator) -> None:
    """``count`` steps of ``worker``, as ``Worker.run`` does them: a claim refreshes the view when it
    is older than ``refresh_seconds`` ("refresh ms" is that listing, 0 in a step that had none;
    "claim ms" the rest of the claim, with attempt 0's selection);
    the child is written in the background while the next step trains ("write ms", off the
    critical path). Overhead = the step's wall time minus its training (the evaluator's sleep)."""
    pop = worker.population
    steps = []
    for _ in range(count):
        started = time.perf_counter()
        before = pop.view.refreshed_at
        step, adoption = worker._next_step()
        claimed = time.perf_counter()
        refreshed = started + (pop.last_refresh_s if pop.view.refreshed_at != before else 0.0)
        if step is None:
            raise RuntimeError("the benchmark worker found no step to claim")
        worker.run_step(step, adoption=adoption, background=True)
        ended = time.perf_counter()
        steps.append(step)
        if timed is None:
            continue
        timed.overhead_ms.append(1000 * (ended - started - evaluator.spent[-1]))
        timed.refresh_ms.append(1000 * (refreshed - started))
        timed.claim_ms.append(1000 * (claimed - refreshed))
    if worker.flush() is False or worker.stats.lost:
        raise RuntimeError("a step's child was not ours (is another worker on this store?)")
    if timed is not None:
        timings = [pop.view.individuals[step]["timings"] for step in steps]
        timed.select_ms += [1000 * t["select_s"] for t in timings]
        timed.write_ms += [1000 * t["write_s"] for t in timings]


@dataclass
class Row:
    backend: str
    population: int
    steps: int
    prefill_s: float
    join_s: float
    timed: Timed
    ops_per_step: float
    lists_per_step: float
    list_ms: float | None  # mean time of one listing
    keys_per_list: float | None
    check_ok: bool

    @property
    def mean_ms(self) -> float:
        return statistics.mean(self.timed.overhead_ms)


def measure(backend: str, url: str, options: dict[str, Any], population: int, steps: int, warmup: int,
            threads: int, evaluator: InstantEvaluator, train_s: float, refresh_s: float = 1.0,
            genome: str = "dna") -> Row:
    config = build_config({"store": url, "storage_options": options, "population": population,
                           "steps": warmup + steps, "workers": 1, "refresh_seconds": refresh_s, "genome": genome})
    store, config, space = open_run(config, check_health=False)  # moto_server checked create-once already
    prefill_s = prefill(store, config, space, evaluator, threads)
    store = Store(url, options)  # the benchmark worker's own, so that only its calls are counted
    ops = OpCounter(store)
    sleeper = BusyEvaluator(evaluator.weights, train_s)
    worker = Worker(store, config, space, worker_id="bench", evaluator=sleeper)
    joined = time.perf_counter()
    worker.population.refresh(force=True)
    join_s = time.perf_counter() - joined
    with worker.pipelined():
        timed_steps(worker, warmup, None, sleeper)
        timed = Timed()
        ops.reset()
        timed_steps(worker, steps, timed, sleeper)
    ops_per_step, lists = ops.total() / steps, ops.lists()
    list_ms = 1000 * ops.list_seconds / lists if lists else None
    keys_per_list = ops.listed / lists if lists else None
    report = check_store(store, config.population, config.population + config.steps)
    ok = report.ok and report.finished
    if not ok:
        print(f"check_store on {url}: {report.violations[:5]}", file=sys.stderr)
    return Row(backend, population, steps, prefill_s, join_s, timed, ops_per_step, lists / steps, list_ms,
               keys_per_list, ok)


# -- the peer: Optuna's journal-file storage --------------------------------------------------------


@dataclass
class PeerRow:
    what: str
    population: int
    steps: int
    ms: list[float]
    prefill_s: float


SPACE = "space"  # --optuna-params token: the Genetic CNN genome's own search space, one parameter per bit


def gcnn_bits() -> list[str]:
    """Parameter names of Genetic CNN's default space as an Optuna study would declare it: one 0/1 choice
    per connection bit of each stage (19 for the paper's stages of 3, 4 and 5 nodes)."""
    from evolve.config import DEFAULT_GENOME_OPTIONS
    from genomes.gcnn.genome import bit_count, parse_options

    nodes = parse_options(DEFAULT_GENOME_OPTIONS["gcnn"]).nodes
    return [f"stage{s}_bit{b}" for s, k in enumerate(nodes) for b in range(bit_count(k))]


def optuna_cost(folder: Path, population: int, steps: int, warmup: int, params: int | str,
                train_s: float) -> PeerRow | None:
    """ms per ask+tell of an Optuna study on ``JournalFileBackend`` (RandomSampler), the shared-file
    storage a user would pick instead, after ``population`` finished trials, with the same stand-in
    training as the engine's between ask and tell (taken out of the time); None without optuna.

    ``params``: that many float parameters, or :data:`SPACE` for the search space a Genetic CNN run
    explores (an int parameter in {0, 1} per bit): what a user searching that space with Optuna writes.
    """
    try:
        import optuna
        from optuna.distributions import FloatDistribution, IntDistribution
        from optuna.storages.journal import JournalFileBackend
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / f"optuna-{population}-{params}.log")))
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    if params == SPACE:
        space: dict[str, Any] = {name: IntDistribution(0, 1) for name in gcnn_bits()}
        what = f"optuna journal file, Genetic CNN's space ({len(space)} bits)"
    else:
        space = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(int(params))}
        what = f"optuna journal file, {params} params"
    chance = rng_for(0, "bench-optuna")

    def step(train_s: float) -> float:
        trial = study.ask(space)
        spent = busy(train_s) if train_s else 0.0
        study.tell(trial, chance.random())
        return spent

    started = time.perf_counter()
    for i in range(population + warmup):
        step(train_s if i >= population else 0.0)
    prefill_s = time.perf_counter() - started
    ms = []
    for _ in range(steps):
        started = time.perf_counter()
        spent = step(train_s)
        ms.append(1000 * (time.perf_counter() - started - spent))
    return PeerRow(what, population, steps, ms, prefill_s)


def peer_table(peers: Sequence[PeerRow], rows: Sequence[Row], genome: str) -> str:
    columns = ["what", "P", "steps", "mean ms", "p50 ms", "p95 ms", "prefill s"]
    out = [[p.what, p.population, p.steps, statistics.mean(p.ms), percentile(p.ms, 50), percentile(p.ms, 95),
            p.prefill_s] for p in peers]
    out += [[f"evolve {r.backend} ({genome}), per step", r.population, r.steps, r.mean_ms, percentile(r.timed.overhead_ms, 50),
             percentile(r.timed.overhead_ms, 95), r.prefill_s] for r in rows if r.backend == "file"]
    return markdown_table(columns, out)


# -- the table --------------------------------------------------------------------------------------


def table(rows: Sequence[Row], demo: Demo) -> str:
    columns = ["backend", "P", "steps", "overhead mean ms", "p50 ms", "p95 ms", "refresh ms", "claim ms",
               "select+read ms", "write ms", "store ops/step", "lists/step", "ms/list", "keys/list",
               "% of demo step", "join s", "prefill s", "check"]
    out = []
    for r in rows:
        t = r.timed
        out.append([r.backend, r.population, r.steps, r.mean_ms, percentile(t.overhead_ms, 50),
                    percentile(t.overhead_ms, 95), statistics.mean(t.refresh_ms), statistics.mean(t.claim_ms),
                    statistics.mean(t.select_ms), statistics.mean(t.write_ms), r.ops_per_step, r.lists_per_step,
                    r.list_ms, r.keys_per_list,
                    100 * r.mean_ms / 1000 / demo.step_s, r.join_s, r.prefill_s, r.check_ok])
    return markdown_table(columns, out)


def ratios(rows: Sequence[Row]) -> str:
    lines = []
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = sorted((r for r in rows if r.backend == backend), key=lambda r: r.population)
        if len(mine) >= 2:
            low, high = mine[0], mine[-1]
            lines.append(f"{backend}: overhead at P={high.population:,} / P={low.population:,} = "
                         f"{high.mean_ms / low.mean_ms:.2f}x (mean), "
                         f"{percentile(high.timed.overhead_ms, 50) / percentile(low.timed.overhead_ms, 50):.2f}x (p50)")
    return "\n".join(lines)


def optuna_params(value: str) -> list[int | str]:
    out: list[int | str] = []
    for token in (t.strip() for t in value.split(",")):
        if token == SPACE:
            out.append(token)
        elif token.isdigit():
            out.append(int(token))
        elif token:
            raise argparse.ArgumentTypeError(f"expected a parameter count or '{SPACE}', got {token!r}")
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="file,tmpfs,s3",
                   help="comma-separated: file (a folder on --workdir's disk), tmpfs (a folder in /dev/shm: "
                        "the engine's own cost, fsync free), s3 (moto on 127.0.0.1)")
    p.add_argument("--populations", default="100,1000,10000", help="comma-separated population sizes")
    p.add_argument("--steps", type=int, default=200, help="timed steps per (backend, population)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--threads", type=int, default=16, help="threads filling the initial population")
    p.add_argument("--train-ms", type=float, default=50.0,
                   help="the stand-in training of a timed step (one core kept busy, taken out of its time): "
                        "the child's write hides behind the next step's training, as in a run")
    p.add_argument("--refresh-seconds", type=float, default=1.0,
                   help="the run setting: how stale a worker's view may be (0: a refresh at every claim)")
    p.add_argument("--demo-steps", type=int, default=100, help="children of the demo run that gives the step time")
    p.add_argument("--demo-step-seconds", type=float, default=None,
                   help="use this demo step time instead of running the demo (then --weights-bytes is used)")
    p.add_argument("--weights-bytes", type=int, default=8192, help="weights blob size without a demo run")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds to wait after the demo run (its Ray processes shut down) before timing")
    p.add_argument("--genome", default="dna", choices=["dna", "gcnn"],
                   help="the engine's genome (gcnn: Genetic CNN's bitstring, the space --optuna-params space declares)")
    p.add_argument("--optuna-params", default="0,4", type=optuna_params,
                   help="Optuna side by side on the same disk (file backend): ask+tell with this many float "
                        f"parameters each, or '{SPACE}' (Genetic CNN's search space, a 0/1 parameter per bit), "
                        "comma-separated ('' for none)")
    p.add_argument("--workdir", default=None, help="where the stores go (default: a fresh temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the machinery in seconds")
    args = p.parse_args(argv)
    if SPACE in args.optuna_params and args.genome != "gcnn":
        p.error(f"--optuna-params {SPACE}: that is Genetic CNN's space; compare it with --genome gcnn")
    if args.smoke:
        args.populations, args.steps, args.warmup, args.threads, args.demo_steps = "10,20", 5, 1, 4, 2
        args.settle = 0.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"file", "tmpfs", "s3"}
    if unknown:
        raise SystemExit(f"--backends: unknown {sorted(unknown)} (expected file, tmpfs, s3)")
    if "tmpfs" in backends and not os.path.isdir(TMPFS):
        print(f"no {TMPFS} here: the tmpfs backend is left out", file=sys.stderr)
        backends.remove("tmpfs")
    populations = [int(p) for p in args.populations.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evolve-bench-overhead-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(header(script_name(__file__), argv), flush=True)
    try:
        if args.demo_step_seconds is not None:
            demo = Demo(args.demo_step_seconds, args.demo_step_seconds, args.demo_step_seconds,
                        os.urandom(args.weights_bytes), args.weights_bytes, "given with --demo-step-seconds")
        else:
            demo = measure_demo(workdir, args.demo_steps, args.smoke)
        print(f"demo step: {1000 * demo.step_s:.0f} ms mean ({1000 * demo.median_step_s:.0f} ms median; "
              f"run wall time per step per worker {1000 * demo.wall_per_step_s:.0f} ms) from {demo.how}", flush=True)
        print(f"weights blob per child: {len(demo.weights):,} bytes (the demo's largest child; median "
              f"{demo.median_weights_bytes:,})", flush=True)
        evaluator = InstantEvaluator(demo.weights)
        time.sleep(args.settle)
        if "file" in backends:
            create = create_cost(workdir / "create-cost", len(demo.weights))
            print(f"one create-once record on this disk ({workdir}): {create:.3f} ms mean over 200 "
                  "(temp file, fsync, link, folder fsync); a step writes 4: the claim and the tombstone on its "
                  "path, the weights and the child while the next step trains", flush=True)
        rows = run_all(backends, populations, args, workdir, evaluator)
        peers = []
        if "file" in backends and args.optuna_params:
            for population in populations:
                for params in args.optuna_params:
                    peer = optuna_cost(workdir / "optuna", population, args.steps, args.warmup, params,
                                       args.train_ms / 1000)
                    if peer is None:
                        print("optuna is not installed (pip install -e '.[bench]'): no side-by-side", file=sys.stderr)
                        break
                    peers.append(peer)
                    print(f"  {peer.what}, P={population}: {statistics.mean(peer.ms):.2f} ms/ask+tell",
                          file=sys.stderr, flush=True)
        print()
        print(table(rows, demo))
        print()
        print(ratios(rows))
        if peers:
            print()
            print(peer_table(peers, rows, args.genome))
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ok = all(r.check_ok for r in rows)
        print(f"check_store: {'every store passes' if ok else 'VIOLATIONS (see stderr)'}")
        return 0 if ok else 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run_all(backends: Sequence[str], populations: Sequence[int], args: argparse.Namespace, workdir: Path,
            evaluator: InstantEvaluator) -> list[Row]:
    rows = []

    def each(backend: str, url_of: Callable[[int], str], options: dict[str, Any]) -> None:
        for population in populations:
            rows.append(measure(backend, url_of(population), options, population, args.steps, args.warmup,
                                args.threads, evaluator, args.train_ms / 1000, args.refresh_seconds, args.genome))
            print(f"  {backend} P={population}: {rows[-1].mean_ms:.2f} ms/step", file=sys.stderr, flush=True)

    if "file" in backends:
        each("file", lambda p: str(workdir / f"file-{p}"), {})
    if "tmpfs" in backends:
        scratch = Path(tempfile.mkdtemp(prefix="evolve-bench-overhead-", dir=TMPFS))
        try:
            each("tmpfs", lambda p: str(scratch / f"tmpfs-{p}"), {})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if "s3" in backends:
        with moto_server([bucket(p) for p in populations]) as endpoint:
            each("s3 (moto)", lambda p: f"s3://{bucket(p)}/run", s3_options(endpoint))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
