"""Training throughput: a child's training through the engine against a plain PyTorch loop (issue 6, item 4).

One network, one batch size, data resident on the device, in this process (no Ray):

* ``engine``: ``evolve.training.train.Trainer.train`` on a DNA genome, as a worker calls it. ``loop`` is its
  own timer (``Outcome.train_seconds``: the SGD steps only); ``child`` is the whole call (build the
  module, count FLOPs, train, evaluate on val + test, serialise the weights), i.e. what a worker
  pays per child.
* ``plain``: a hand-written loop on the same ``nn.Module`` (built from the same genome and seed),
  the same data tensors, batch size, optimiser (SGD, momentum 0.9, weight decay 1e-4) and
  precision (on CUDA: bf16 autocast + channels_last, as the engine does; fp32 on CPU).
* CUDA only, to see what else would make small nets fast: ``plain fp32`` (no autocast, no
  channels_last), ``plain cudnn.benchmark``, ``plain CUDA graph`` (the whole step captured once
  and replayed) and ``plain torch.compile`` (``--compile``; on by default on CUDA, possible on
  CPU too). For the last three the one-off cost per architecture (autotuning / warm-up + capture /
  compilation) is measured and turned into a break-even: the batches a child must train for the
  speed-up to repay it. A child trains ``--batches`` batches and every child is a new
  architecture, so a break-even above that does not pay off.

Every run builds a fresh module (as each child is new). After one untimed warm-up run of each,
the variants run in turn, ``--repeats`` rounds (so drift in machine load hits all alike), and the
median is reported. cudnn.benchmark (a global switch) and torch.compile (measured with empty
inductor/Triton caches, as a new architecture finds them) are measured on their own afterwards.

Then worker sharing: N processes (N in ``--workers``) each train ``--children`` children through
the engine and through the plain loop (``--no-share-plain``: engine only) on one device; after every
process has warmed up they start together, and the aggregate is all training images over the
window from the common start to the last finish. On CUDA without MPS the processes time-slice
the GPU.

    python bench/gpu.py                             # device auto (CUDA if present)
    python bench/gpu.py --device cpu --smoke        # seconds: a tiny net on the CPU
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import header, settings_from


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    dataset: str = "mnist-mini"
    layers: int = 10
    channels: int = 64
    batch_size: int = 256
    batches: int = 150
    repeats: int = 3
    workers: tuple[int, ...] = (1, 2, 4, 8)
    children: int = 4
    share_plain: bool = True
    compile: bool | None = None
    threads: int = 1
    seed: int = 0


BARRIER_SECONDS = 900.0  # every worker's warm-up child must finish within this

SMOKE = {"layers": 2, "channels": 8, "batch_size": 50, "batches": 5, "repeats": 1, "workers": (1, 2),
         "children": 1, "share_plain": True, "compile": False}


# ----------------------------------------------------------------------------------- the network and data


def conv_stack(layers: int, channels: int) -> Any:
    """A DNA genome: ``layers`` 3x3 stride-1 convolutions of ``channels``, each followed by BN + ReLU."""
    from genomes import DNA
    from genomes.dna.genome import Edge, Vertex

    vertices = [Vertex(0, "linear")] + [Vertex(i, "bn_relu") for i in range(1, layers + 1)]
    edges = [Edge(100 + i, i - 1, i, "conv", False, (3, 3), 1, channels) for i in range(1, layers + 1)]
    if layers == 0:
        vertices.append(Vertex(1, "linear"))
        edges.append(Edge(100, 0, 1))
    return DNA(lr=0.05, vertices=tuple(vertices), edges=tuple(edges), head_id=99, next_id=200)


def device_data(dataset: str, device: Any, seed: int) -> Any:
    """The dataset's splits resident on ``device`` (evolve.training.train.to_device), as the engine holds them.

    ``synthetic:CxHxW`` gives 10,000 random images of that shape in 10 classes (no download), for
    a CIFAR-sized input where the real data is not at hand.
    """
    from evolve.training.datasets import load_dataset
    from evolve.training.train import to_device

    if dataset.startswith("synthetic:"):
        return _synthetic(dataset.split(":", 1)[1], device, seed)
    return to_device(load_dataset(dataset, seed=seed), device)


def _synthetic(shape_text: str, device: Any, seed: int) -> Any:
    import torch

    from evolve.training.train import DeviceData

    try:
        c, h, w = (int(v) for v in shape_text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--dataset synthetic:CxHxW expected, e.g. synthetic:3x32x32; got {shape_text!r}")
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[Any, Any]:
        return (torch.randn(n, c, h, w, generator=gen).to(device),
                torch.randint(0, 10, (n,), generator=gen).to(device))

    (xt, yt), (xv, yv), (xs, ys) = split(8000), split(1000), split(1000)
    return DeviceData(name=f"synthetic {c}x{h}x{w}", input_shape=(c, h, w), num_classes=10,
                      device=torch.device(device), x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs,
                      y_test=ys)


# ----------------------------------------------------------------------------------- the variants


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(s: Settings, data: Any, device: Any) -> Any:
    from evolve.config import TrainConfig
    from evolve.training.train import Trainer

    config = TrainConfig(batches=s.batches, batch_size=s.batch_size, device=str(device))
    return Trainer(data, config, device, max_params=10**9)


def engine_child(s: Settings, data: Any, device: Any, seed: int) -> dict[str, float]:
    """One child through the engine: the loop's own timer, its evaluation, and the whole call."""
    trainer = make_trainer(s, data, device)
    start = time.perf_counter()
    outcome = trainer.train(conv_stack(s.layers, s.channels), None, seed)
    wall = time.perf_counter() - start
    if outcome.status != "ok":
        raise RuntimeError(f"engine child failed: {outcome.reason}")
    return {"loop": outcome.train_seconds, "eval": outcome.eval_seconds, "child": wall}


def fresh_module(s: Settings, data: Any, device: Any, seed: int, channels_last: bool) -> Any:
    """The exact module the engine trains: the same genome, built under the same seed."""
    import torch

    torch.manual_seed(seed)
    model = conv_stack(s.layers, s.channels).to_module(data.input_shape, data.num_classes).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _optimizer(model: Any) -> Any:
    import torch

    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def _order(s: Settings, data: Any, device: Any, seed: int, batches: int) -> Any:
    """Minibatch indices for ``batches`` steps, drawn up front (epoch-wise permutations, as the engine)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    n = data.x_train.shape[0]
    if s.batch_size > n:
        raise SystemExit(f"--batch-size {s.batch_size} exceeds the {n:,} training images of {data.name}")
    per_epoch = max(1, n // s.batch_size)
    perms = [torch.randperm(n, device=device, generator=gen)[: per_epoch * s.batch_size]
             for _ in range(-(-batches // per_epoch))]
    return torch.cat(perms).view(-1, s.batch_size)[:batches]


def plain_loop(s: Settings, data: Any, device: Any, seed: int, amp: bool, channels_last: bool) -> float:
    """A hand-written training loop on the same module and data; seconds for ``s.batches`` steps."""
    import torch
    from torch.nn import functional as F

    model = fresh_module(s, data, device, seed, channels_last)
    optimizer = _optimizer(model)
    order = _order(s, data, device, seed, s.batches)
    x, y = data.x_train, data.y_train
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    sync(device)
    start = time.perf_counter()
    for idx in order:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x[idx].contiguous(memory_format=fmt)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def graph_loop(s: Settings, data: Any, device: Any, seed: int) -> tuple[float, float]:
    """The whole step (forward, backward, SGD) captured as one CUDA graph and replayed.

    Returns (capture seconds: warm-up on a side stream + capture, steady seconds for ``s.batches``).
    """
    import torch
    from torch.nn import functional as F

    model = fresh_module(s, data, device, seed, channels_last=True)
    optimizer = _optimizer(model)
    order = _order(s, data, device, seed, s.batches)
    x, y = data.x_train, data.y_train
    static_idx = order[0].clone()

    def step() -> Any:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = F.cross_entropy(model(x[static_idx].contiguous(memory_format=torch.channels_last)),
                                   y[static_idx])
        loss.backward()
        optimizer.step()
        return loss

    model.train()
    sync(device)
    start = time.perf_counter()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    sync(device)
    captured = time.perf_counter() - start
    start = time.perf_counter()
    for idx in order:
        static_idx.copy_(idx)
        graph.replay()
    sync(device)
    return captured, time.perf_counter() - start


def compiled_loop(s: Settings, data: Any, device: Any, seed: int) -> tuple[float, float]:
    """``torch.compile`` of the module (default mode); returns (first-step seconds, steady seconds)."""
    import torch
    from torch.nn import functional as F

    cuda = device.type == "cuda"
    model = fresh_module(s, data, device, seed, channels_last=cuda)
    compiled = torch.compile(model)
    optimizer = _optimizer(model)
    order = _order(s, data, device, seed, s.batches + 1)
    x, y = data.x_train, data.y_train
    fmt = torch.channels_last if cuda else torch.contiguous_format

    def step(idx: Any) -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(compiled(x[idx].contiguous(memory_format=fmt)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    sync(device)
    start = time.perf_counter()
    step(order[0])
    sync(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for idx in order[1:]:
        step(idx)
    sync(device)
    return first, time.perf_counter() - start


# ----------------------------------------------------------------------------------- measuring


@dataclass
class Row:
    variant: str
    seconds: float | None  # median steady seconds for s.batches steps
    once: float | None = None  # one-off cost per architecture (autotune / capture / compile), seconds
    note: str = ""


def interleaved(s: Settings, variants: dict[str, Callable[[int], Any]],
                ) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """One untimed warm-up of every variant, then ``s.repeats`` rounds running each variant once.

    Interleaving puts every variant under the same drift in machine load; each run builds a fresh
    module from its own seed. A variant that fails (only the optional CUDA ones may) is dropped
    with its error.
    """
    runs: dict[str, list[Any]] = {name: [] for name in variants}
    errors: dict[str, str] = {}
    for i in [-1, *range(s.repeats)]:
        for name, run in variants.items():
            if name in errors:
                continue
            try:
                result = run(s.seed + (1000 if i < 0 else i))
            except Exception as exc:  # an optional variant that fails is reported, not fatal
                if name in REQUIRED:
                    raise
                errors[name] = _failure(exc)
                continue
            if i >= 0:
                runs[name].append(result)
    return runs, errors


REQUIRED = ("engine", "plain")


def single_process(s: Settings, data: Any, device: Any) -> tuple[list[Row], dict[str, float]]:
    cuda = device.type == "cuda"
    variants: dict[str, Callable[[int], Any]] = {
        "engine": lambda seed: engine_child(s, data, device, seed),
        "plain": lambda seed: plain_loop(s, data, device, seed, amp=cuda, channels_last=cuda),
    }
    if cuda:
        variants["fp32"] = lambda seed: plain_loop(s, data, device, seed, amp=False, channels_last=False)
        variants["graph"] = lambda seed: graph_loop(s, data, device, seed)
    runs, errors = interleaved(s, variants)
    engine = {k: statistics.median(c[k] for c in runs["engine"]) for k in ("loop", "eval", "child")}
    rows = [Row("engine: Trainer loop (train_seconds)", engine["loop"]),
            Row("engine: whole child (build, FLOPs, train, eval, weights)", engine["child"],
                note=f"eval {engine['eval'] * 1e3:.0f} ms"),
            Row("plain loop" + (" (bf16 autocast, channels_last)" if cuda else " (fp32)"),
                statistics.median(runs["plain"]))]
    if cuda:
        rows.append(_row("plain loop fp32, NCHW", runs["fp32"], errors.get("fp32")))
        rows.append(_row("plain loop, whole step as a CUDA graph", runs["graph"], errors.get("graph")))
        rows.append(_guarded("plain loop + cudnn.benchmark", lambda: _with_benchmark(s, data, device)))
    if s.compile if s.compile is not None else cuda:
        rows.append(_guarded("plain loop + torch.compile", lambda: _first_compile(s, data, device)))
    return rows, engine


def _row(variant: str, runs: list[Any], error: str | None) -> Row:
    """A row from a variant's runs: seconds, or (one-off seconds, seconds) pairs."""
    if error is not None:
        return Row(variant, None, note=error)
    if runs and isinstance(runs[0], tuple):
        return Row(variant, statistics.median(r[1] for r in runs), once=statistics.median(r[0] for r in runs))
    return Row(variant, statistics.median(runs))


def _with_benchmark(s: Settings, data: Any, device: Any) -> tuple[float, float]:
    """cudnn.benchmark (global, so measured on its own): its one-off is autotuning each new shape."""
    import torch

    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        first = plain_loop(s, data, device, s.seed + 1000, True, True)
        steady = statistics.median([plain_loop(s, data, device, s.seed + i, True, True)
                                    for i in range(s.repeats)])
        return max(0.0, first - steady), steady
    finally:
        torch.backends.cudnn.benchmark = old


def _first_compile(s: Settings, data: Any, device: Any) -> tuple[float, float]:
    """torch.compile's cost for a new architecture: the first compiled step with empty caches.

    Inductor and Triton keep compiled kernels on disk, so a second run of this benchmark would
    find them; a new architecture finds none, hence fresh cache folders for the measurement.
    The steady figure is the median of ``s.repeats`` further runs (fresh modules, same shapes).
    """
    import torch

    names = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="evolve-bench-inductor-") as cold:
        os.environ.update({names[0]: cold, names[1]: os.path.join(cold, "triton")})
        try:
            torch._dynamo.reset()
            first, _ = compiled_loop(s, data, device, s.seed + 1000)
            steady = [compiled_loop(s, data, device, s.seed + i)[1] for i in range(s.repeats)]
        finally:
            torch._dynamo.reset()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return first, statistics.median(steady)


def _failure(exc: BaseException) -> str:
    return f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"


def _guarded(variant: str, measure: Callable[[], tuple[float | None, float]]) -> Row:
    """Run one optional variant; one that fails on this stack is reported in its row, not fatal."""
    try:
        once, seconds = measure()
        return Row(variant, seconds, once=once)
    except Exception as exc:  # noqa: BLE001
        return Row(variant, None, note=_failure(exc))


# ----------------------------------------------------------------------------------- sharing one device


def share_worker(s: Settings, path: str, rank: int, barrier: Any, results: Any) -> None:
    """One of N processes: warm up, wait for all, train ``s.children`` children, report the window."""
    import torch

    torch.set_num_threads(s.threads)
    from evolve.training.train import resolve_device

    device = resolve_device(s.device)
    data = device_data(s.dataset, device, s.seed)
    cuda = device.type == "cuda"

    def child(seed: int) -> None:
        if path == "engine":
            engine_child(s, data, device, seed)
        else:
            plain_loop(s, data, device, seed, amp=cuda, channels_last=cuda)

    try:
        child(s.seed + 1000 + rank)
        barrier.wait()
        start = time.monotonic()
        for i in range(s.children):
            child(s.seed + 10 * rank + i)
        results.put({"rank": rank, "start": start, "end": time.monotonic(), "error": None})
    except Exception as exc:  # noqa: BLE001 - reported in the table
        barrier.abort()
        results.put({"rank": rank, "start": 0.0, "end": 0.0, "error": f"{type(exc).__name__}: {exc}"})


def share(s: Settings, path: str, n: int) -> dict[str, Any]:
    """Aggregate training images/s of ``n`` processes training children on one device at once."""
    ctx = _context()
    barrier, results = ctx.Barrier(n, timeout=BARRIER_SECONDS), ctx.Queue()
    procs = [ctx.Process(target=share_worker, args=(s, path, r, barrier, results)) for r in range(n)]
    for p in procs:
        p.start()
    try:
        got = _collect(procs, results)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [g["error"] for g in got if g["error"]]
    if errors:
        return {"path": path, "workers": n, "error": errors[0]}
    window = max(g["end"] for g in got) - min(g["start"] for g in got)
    images = n * s.children * s.batches * s.batch_size
    return {"path": path, "workers": n, "seconds": window, "images_per_s": images / window}


def _collect(procs: list[Any], results: Any) -> list[dict[str, Any]]:
    """One result per process; a process that died without one (a crash, an OOM kill) is an error."""
    import queue

    got: list[dict[str, Any]] = []
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=5))
        except queue.Empty:
            dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
            if dead:
                got.append({"error": f"a worker process exited with code {dead[0].exitcode}"})
                return got
    return got


def _context() -> Any:
    """Forkserver with torch preloaded: children start in well under a second, and CUDA is never
    initialised before a fork (the server only imports)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "evolve.training.train", "genomes"])
    return ctx


# ----------------------------------------------------------------------------------- report


def describe_device(device: Any) -> str:
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{torch.cuda.get_device_name(device)}, {props.total_memory / 2**30:.0f} GiB, CUDA "
                f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return f"CPU, {torch.get_num_threads()} torch thread(s) in the measuring process"


def step_table(s: Settings, rows: list[Row]) -> list[str]:
    images = s.batches * s.batch_size
    plain = next(r for r in rows if r.variant.startswith("plain loop") and r.seconds)
    out = [("| variant | images/s | ms/batch | vs plain loop | one-off per architecture | break-even batches "
            "| note |"),
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.seconds is None:
            out.append(f"| {r.variant} | - | - | - | - | - | {r.note} |")
            continue
        once, even = "-", "-"
        if r.once is not None:
            saved = (plain.seconds - r.seconds) / s.batches
            once = f"{r.once:.2f} s"
            even = f"{(r.once - r.seconds / s.batches) / saved:,.0f}" if saved > 0 else "never"
        out.append(f"| {r.variant} | {images / r.seconds:,.0f} | {r.seconds / s.batches * 1e3:.2f} | "
                   f"{plain.seconds / r.seconds:.2f}x | {once} | {even} | {r.note} |")
    return out


def share_table(shares: list[dict[str, Any]]) -> list[str]:
    out = ["| path | workers | aggregate images/s | speed-up vs 1 worker | window s |",
           "|---|---|---|---|---|"]
    base = {r["path"]: r["images_per_s"] for r in shares if r["workers"] == 1 and "images_per_s" in r}
    for r in shares:
        if "error" in r:
            out.append(f"| {r['path']} | {r['workers']} | failed: {r['error'][:120]} | - | - |")
            continue
        up = r["images_per_s"] / base[r["path"]] if r["path"] in base else float("nan")
        out.append(f"| {r['path']} | {r['workers']} | {r['images_per_s']:,.0f} | {up:.2f}x | "
                   f"{r['seconds']:.1f} |")
    return out


def report(s: Settings, argv: list[str], device: Any, data: Any, rows: list[Row], engine: dict[str, float],
           shares: list[dict[str, Any]]) -> str:
    plain = next(r for r in rows if r.variant.startswith("plain loop") and r.seconds)
    params = conv_stack(s.layers, s.channels).param_count(data.input_shape, data.num_classes)
    lines = [
        header("bench/gpu.py", argv),
        f"device: {describe_device(device)}",
        (f"network: {s.layers} x conv3x3({s.channels}) + BN + ReLU, global pool, linear "
         f"({params:,} parameters); "
        f"input {'x'.join(map(str, data.input_shape))} ({data.name}); batch {s.batch_size}; "
        f"{s.batches} batches per child; median of {s.repeats}"),
        "",
        *step_table(s, rows),
        "",
        (f"engine loop / plain loop: {plain.seconds / engine['loop']:.2f}x the plain loop's images/s "
        f"(target >= 0.9x); whole child / plain loop: {plain.seconds / engine['child']:.2f}x "
        f"(the rest is per-child work: build, FLOP count, evaluation, weights to bytes)."),
        ("break-even: batches a child must train before a one-off cost (capture, compilation) is repaid "
        f"by its faster steps; a child trains {s.batches}."),
    ]
    if shares:
        lines += ["", (f"sharing one device: each worker trains {s.children} children after a warm-up one; "
                      f"{s.threads} torch thread(s) per process"), "", *share_table(shares)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- entry point


def parse(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", default=False,
                   help="tiny net and counts: seconds; proves the script runs")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dataset", help="a dataset spec (evolve/training/datasets.py) or synthetic:CxHxW")
    p.add_argument("--layers", type=int)
    p.add_argument("--channels", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batches", type=int, help="SGD steps per child")
    p.add_argument("--repeats", type=int)
    p.add_argument("--workers", type=lambda t: tuple(int(v) for v in t.split(",") if v),
                   help="process counts for the sharing table, e.g. 1,2,4,8; empty to skip")
    p.add_argument("--children", type=int, help="children per worker when sharing")
    p.add_argument("--no-share-plain", dest="share_plain", action="store_false",
                   help="sharing: the engine path only")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="measure torch.compile (default: on CUDA only)")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = p.parse_args(argv)
    return settings_from(args, Settings, SMOKE), args


def main(argv: list[str] | None = None) -> int:
    import torch

    argv = sys.argv[1:] if argv is None else argv
    s, args = parse(argv)
    torch.set_num_threads(s.threads)
    from evolve.training.train import resolve_device

    device = resolve_device(s.device)
    data = device_data(s.dataset, device, s.seed)
    rows, engine = single_process(s, data, device)
    paths = ("engine", "plain") if s.share_plain else ("engine",)
    shares = [share(s, path, n) for path in paths for n in s.workers]
    print(report(s, argv, device, data, rows, engine, shares), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"settings": asdict(s), "device": str(device), "engine": engine,
                                         "rows": [asdict(r) for r in rows], "shares": shares}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
