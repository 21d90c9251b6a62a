"""A run as one table: every individual as a row of a Parquet file with an explicit Arrow schema.

Readable without help by pyarrow, pandas, polars, DuckDB, Spark: only plain types (int64,
float64, bool, string, timestamp[us, UTC], list<int64>); JSON-shaped fields (mutation
parameters, the genome) are JSON strings. The run's config travels in the file's
metadata (``evolve.run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from evolve.keys import RUN_KEY
from evolve.store import Store, StoreError

__all__ = ["ExportError", "ExportReport", "export_parquet", "rows", "schema"]


CHUNK = 1000


class ExportError(Exception):
    """The export cannot be written; one line."""


def schema() -> Any:
    """The Arrow schema of an export (one row per individual)."""
    import pyarrow as pa

    fields = [
        ("step", pa.int64(), False, "the step that produced the individual"),
        ("origin", pa.string(), True, "initial, mutation or generation"),
        ("generation", pa.int64(), True, "generational runs: the generation"),
        ("parent", pa.int64(), True, "the first parent's step (null for the initial population)"),
        ("parents", pa.list_(pa.int64()), False, "all parents' steps (two after a crossover)"),
        ("mutation", pa.string(), True, "the mutation's name (null for the initial population)"),
        ("mutation_params", pa.string(), True, "the mutation's parameters, JSON"),
        ("loser", pa.int64(), True, "the individual killed to make room for this one"),
        ("attempt", pa.int64(), True, "the selection attempt that won the step"),
        ("fitness", pa.float64(), True, "validation accuracy (generational: averaged over evaluations)"),
        ("raw_fitness", pa.float64(), True, "this evaluation's fitness"),
        ("val_accuracy", pa.float64(), True, None),
        ("test_accuracy", pa.float64(), True, None),
        ("status", pa.string(), True, "ok or failed"),
        ("reason", pa.string(), True, "why it failed"),
        ("alive", pa.bool_(), False, "no tombstone at export time"),
        ("killed_at_step", pa.int64(), True, "the step whose selection killed it"),
        ("killed_by", pa.string(), True, "the worker that wrote the tombstone"),
        ("params", pa.int64(), True, "trainable parameters"),
        ("flops", pa.int64(), True, None),
        ("train_seconds", pa.float64(), True, None),
        ("eval_seconds", pa.float64(), True, None),
        ("final_loss", pa.float64(), True, None),
        ("inherited", pa.float64(), True, "share of parameters inherited from the parent"),
        ("device", pa.string(), True, None),
        ("select_s", pa.float64(), True, "timings: selection"),
        ("evaluate_s", pa.float64(), True, "timings: training and evaluation"),
        ("write_s", pa.float64(), True, "timings: writing the record"),
        ("total_s", pa.float64(), True, "timings: the whole step"),
        ("worker", pa.string(), True, None),
        ("adopted", pa.bool_(), True, "finished by a worker that adopted the step"),
        ("seed", pa.int64(), True, None),
        ("created_at", pa.timestamp("us", tz="UTC"), True, "when the record was written"),
        ("genome_kind", pa.string(), True, None),
        ("genome_summary", pa.string(), True, "describe(): one line for people"),
        ("genome", pa.string(), True, "the genome, JSON"),
        ("hash", pa.string(), True, "architecture content hash"),
        ("weights_key", pa.string(), True, "store key of the trained weights"),
    ]
    return pa.schema([pa.field(name, kind, nullable=nullable,
                               metadata={"description": doc} if doc else None)
                      for name, kind, nullable, doc in fields])


@dataclass
class ExportReport:
    path: str
    rows: int
    alive: int
    bytes: int
    seconds: float
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # records skipped: (key, reason)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def rows(individuals: dict[int, dict[str, Any]], deaths: dict[int, dict[str, Any]],
         summaries: dict[Any, str] | None = None) -> list[dict[str, Any]]:
    """One dict per individual (step order) in the export's columns; ``summaries`` caches describe()."""
    from datetime import UTC, datetime

    from genomes import GenomeError, genome_from_json

    summaries = {} if summaries is None else summaries
    out = []
    for step in sorted(individuals):
        r = individuals[step]
        mutation = r.get("mutation") if isinstance(r.get("mutation"), dict) else None
        metrics = r.get("metrics") or {}
        timings = r.get("timings") or {}
        genome = r.get("genome")
        death = deaths.get(step)
        parents = [int(p) for p in r.get("parents") or []]
        created = _float(r.get("created_at"))
        genome_text = json.dumps(genome, sort_keys=True, separators=(",", ":")) if genome is not None else None
        summary = None
        if genome_text is not None:
            key = genome_text  # children copied unchanged (identity, reset-weights) share it
            summary = summaries.get(key)
            if summary is None:
                try:
                    summary = genome_from_json(genome).describe()
                except (GenomeError, KeyError, TypeError, ValueError) as exc:
                    summary = f"invalid genome: {exc}"
                summaries[key] = summary
        weights = r.get("weights") if isinstance(r.get("weights"), dict) else None
        seed = _int(r.get("seed"))
        out.append({
            "step": step,
            "origin": _str(r.get("origin")),
            "generation": _int(r.get("generation")),
            "parent": parents[0] if parents else None,
            "parents": parents,
            "mutation": _str(mutation.get("name")) if mutation else None,
            "mutation_params": json.dumps(mutation.get("params", {}), sort_keys=True) if mutation else None,
            "loser": _int(r.get("loser")),
            "attempt": _int(r.get("attempt")),
            "fitness": _float(r.get("fitness")),
            "raw_fitness": _float(r.get("raw_fitness", r.get("fitness"))),
            "val_accuracy": _float(r.get("val_accuracy")),
            "test_accuracy": _float(r.get("test_accuracy")),
            "status": _str(r.get("status")),
            "reason": _str(r.get("reason")),
            "alive": death is None,
            "killed_at_step": _int(death.get("killed_at_step")) if death else None,
            "killed_by": _str(death.get("by")) if death else None,
            "params": _int(metrics.get("params")),
            "flops": _int(metrics.get("flops")),
            "train_seconds": _float(metrics.get("train_seconds")),
            "eval_seconds": _float(metrics.get("eval_seconds")),
            "final_loss": _float(metrics.get("final_loss")),
            "inherited": _float(metrics.get("inherited")),
            "device": _str(metrics.get("device")),
            "select_s": _float(timings.get("select_s")),
            "evaluate_s": _float(timings.get("evaluate_s")),
            "write_s": _float(timings.get("write_s")),
            "total_s": _float(timings.get("total_s")),
            "worker": _str(r.get("worker")),
            "adopted": r.get("adopted") if isinstance(r.get("adopted"), bool) else None,
            "seed": seed if seed is not None and -(2**63) <= seed < 2**63 else None,
            "created_at": datetime.fromtimestamp(created, tz=UTC) if created is not None else None,
            "genome_kind": _str(genome.get("kind")) if isinstance(genome, dict) else None,
            "genome_summary": summary,
            "genome": genome_text,
            "hash": _str(r.get("hash")),
            "weights_key": _str(weights.get("key")) if weights else None,
        })
    return out


def export_parquet(store: Store, path: str, threads: int = 8, compression: str = "zstd") -> ExportReport:
    """Write every individual of the run in ``store`` to ``path`` (Parquet), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evolve.report import read_records

    started = time.perf_counter()
    run = store.read_json(RUN_KEY)
    if run is None:
        raise StoreError(f"no evolve run at {store.url!r} (run.json missing)")
    unreadable: list[tuple[str, str]] = []
    keys = store.list_keys("individuals/")
    deaths = read_records(store, store.list_keys("deaths/"), threads, unreadable)
    tested = read_records(store, store.list_keys("results/tested/"), threads, unreadable)
    table_rows: list[dict[str, Any]] = []
    cache: dict[Any, str] = {}
    for start in range(0, len(keys), CHUNK):  # records hold whole genomes: convert them a chunk at a time
        chunk = read_records(store, keys[start:start + CHUNK], threads, unreadable)
        for step, record in chunk.items():  # a child's test accuracy is measured for the best only, kept aside
            if record.get("test_accuracy") is None and step in tested:
                record["test_accuracy"] = tested[step].get("test_accuracy")
        table_rows += rows(chunk, deaths, cache)
    sch = schema().with_metadata({
        "evolve.run": json.dumps(_public(run)),
        "evolve.store": store.url,
        "evolve.exported_at": str(time.time()),
    })
    columns = {f.name: [row[f.name] for row in table_rows] for f in sch}
    table = pa.Table.from_pydict(columns, schema=sch)
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}.parquet")
    try:
        pq.write_table(table, tmp, compression=compression)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return ExportReport(path=path, rows=table.num_rows, alive=sum(1 for r in table_rows if r["alive"]),
                        bytes=os.path.getsize(path), seconds=time.perf_counter() - started, unreadable=unreadable)


def _public(run: dict[str, Any]) -> dict[str, Any]:
    """run.json without storage options: stores written before evolve stopped saving them may hold credentials."""
    config = {k: v for k, v in (run.get("config") or {}).items() if k != "storage_options"}
    return {"schema": run.get("schema"), "config": config, "space": run.get("space"),
            "created_at": run.get("created_at")}
