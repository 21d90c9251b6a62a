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
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evolve.store.backend import Store, StoreError
from evolve.store.failures import ExportError
from evolve.store.keys import RUN_KEY
from evolve.store.records import ExportRow, Individual, Tombstone
from evolve.store.snapshot import read_records
from genomes import GenomeError, genome_from_json

__all__ = ["ExportError", "ExportReport", "export_parquet", "rows", "schema", "table"]


CHUNK = 1000


def schema() -> Any:
    """The Arrow schema of an export (one row per individual), derived from ``evolve.store.records.ExportRow``."""
    import pyarrow as pa

    return pa.schema([pa.field(name, _arrow_type(info.annotation), nullable=_nullable(info.annotation),
                               metadata={"description": info.description} if info.description else None)
                      for name, info in ExportRow.model_fields.items()])


def _arrow_type(annotation: Any) -> Any:
    import pyarrow as pa

    kind = annotation
    if _nullable(annotation):
        kind = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(kind) is list:
        return pa.list_(_arrow_type(typing.get_args(kind)[0]))
    return {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string(),
            datetime: pa.timestamp("us", tz="UTC")}[kind]


def _nullable(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


@dataclass
class ExportReport:
    path: str
    rows: int
    alive: int
    bytes: int
    seconds: float
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # records skipped: (key, reason)


def rows(individuals: dict[int, Individual], deaths: dict[int, Tombstone],
         summaries: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One dict per individual (step order) in the export's columns; ``summaries`` caches describe()."""

    summaries = {} if summaries is None else summaries
    out = []
    for step in sorted(individuals):
        r = individuals[step]
        genome_text = json.dumps(r.genome, sort_keys=True, separators=(",", ":"))
        summary = summaries.get(genome_text)  # children copied unchanged (identity, reset-weights) share it
        if summary is None:
            try:
                summary = genome_from_json(r.genome).describe()
            except (GenomeError, KeyError, TypeError, ValueError) as exc:
                summary = f"invalid genome: {exc}"
            summaries[genome_text] = summary
        out.append(dict(ExportRow.of(r, deaths.get(step), genome_text, summary)))
    return out


def table(store: Store, threads: int = 8, unreadable: list[tuple[str, str]] | None = None) -> Any:
    """Every individual of the run in ``store`` as an Arrow table (``schema()``, the run in its metadata).

    Records that do not parse are skipped and listed in ``unreadable`` as ``(key, reason)``.
    """
    import pyarrow as pa


    run = store.read_json(RUN_KEY)
    if run is None:
        raise StoreError(f"no evolve run at {store.url!r} (run.json missing)")
    unreadable = [] if unreadable is None else unreadable
    keys = store.list_keys("individuals/")
    deaths = read_records(store, store.list_keys("deaths/"), threads, unreadable, typed=True)
    tested = read_records(store, store.list_keys("results/tested/"), threads, unreadable, typed=True)
    table_rows: list[dict[str, Any]] = []
    cache: dict[str, str] = {}
    for start in range(0, len(keys), CHUNK):  # records hold whole genomes: convert them a chunk at a time
        chunk = read_records(store, keys[start:start + CHUNK], threads, unreadable, typed=True)
        for step, record in chunk.items():  # a child's test accuracy is measured for the best only, kept aside
            if record.test_accuracy is None and step in tested:
                chunk[step] = record.model_copy(update={"test_accuracy": tested[step].test_accuracy})
        table_rows += rows(chunk, deaths, cache)
    genes = gene_columns(run)
    sch = pa.schema([*schema(), *(pa.field(f"{GENE_PREFIX}{name}", kind, nullable=True,
                                           metadata={"description": f"the gene {name}"})
                                  for name, kind in genes.items())])
    sch = sch.with_metadata({
        "evolve.run": json.dumps(_public(run)),
        "evolve.store.backend": store.url,
        "evolve.exported_at": str(time.time()),
    })
    for row in table_rows:
        values = gene_values(json.loads(row["genome"]) if row["genome"] else {})
        for name, kind in genes.items():
            row[f"{GENE_PREFIX}{name}"] = _cell(values.get(name), kind)
    return pa.Table.from_pydict({f.name: [row[f.name] for row in table_rows] for f in sch}, schema=sch)


GENE_PREFIX = "hp_"
"""A column per hyperparameter gene: ``hp_learning_rate``, ``hp_optimizer``, ... (``genomes.hparams``)."""


def gene_columns(run: dict[str, Any]) -> dict[str, Any]:
    """The run's genes and each one's Arrow type: float64 for floats, int64 for ints, a choice's values'
    type where they share one (else string); DNA's learning rate is always a gene."""
    import pyarrow as pa

    declared = dict((run.get("space") or {}).get("hparams") or {})
    out: dict[str, Any] = {}
    if (run.get("config") or {}).get("genome", "dna") == "dna" and "learning_rate" not in declared:
        out["learning_rate"] = pa.float64()
    for name, spec in declared.items():
        if "float" in spec:
            out[name] = pa.float64()
        elif "int" in spec:
            out[name] = pa.int64()
        else:
            kinds = {type(v) for v in spec.get("choice", [])}
            out[name] = {frozenset({int}): pa.int64(), frozenset({float}): pa.float64(),
                         frozenset({int, float}): pa.float64(), frozenset({bool}): pa.bool_()}.get(
                frozenset(kinds), pa.string())
    return out


def gene_values(genome: dict[str, Any]) -> dict[str, Any]:
    """A genome JSON's gene values (a DNA written before genes existed holds its learning rate at the top)."""
    values = dict(genome.get("hparams") or {})
    if "learning_rate" in genome:
        values.setdefault("learning_rate", genome["learning_rate"])
    return values


def _cell(value: Any, kind: Any) -> Any:
    import pyarrow as pa

    if value is None:
        return None
    if kind == pa.string():
        return value if isinstance(value, str) else json.dumps(value)
    if kind == pa.float64():
        return float(value)
    return value


def export_parquet(store: Store, path: str, threads: int = 8, compression: str = "zstd") -> ExportReport:
    """Write every individual of the run in ``store`` to ``path`` (Parquet), atomically."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    started = time.perf_counter()
    unreadable: list[tuple[str, str]] = []
    data = table(store, threads, unreadable)
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ExportError(f"cannot write {path}: folder {folder} does not exist")
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.parquet")
    try:
        pq.write_table(data, tmp, compression=compression)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ExportError(f"cannot write {path}: {exc.strerror or str(exc).replace(tmp, path)}") from exc
    return ExportReport(path=path, rows=data.num_rows, alive=pc.sum(data.column("alive")).as_py() or 0,
                        bytes=os.path.getsize(path), seconds=time.perf_counter() - started, unreadable=unreadable)


def _public(run: dict[str, Any]) -> dict[str, Any]:
    """run.json without storage options: stores written before evolve stopped saving them may hold credentials."""
    config = {k: v for k, v in (run.get("config") or {}).items() if k != "storage_options"}
    return {"schema": run.get("schema"), "config": config, "space": run.get("space"),
            "created_at": run.get("created_at")}
