"""A tabular benchmark as the fitness: every architecture of a space trained once and for all.

``fitness = "table:PATH[#METRIC[,COST[*SCALE]]]"``: a child's fitness is its row's METRIC in the
table at PATH (CSV or Parquet, any fsspec URL, the run's ``storage_options`` apply), looked up by
the genome's string form (NAS-Bench-201's ``|op~0|+|op~0|op~1|+|...|``). No network is built and
nothing is trained, so a search costs lookups and can be repeated hundreds of times: the way the
field compares search strategies (NAS-Bench-201, Dong & Yang 2020; White et al. 2021).

* The key column is the table's one string column (or, among several, the one named ``arch``).
* METRIC names the numeric column to maximise; without it, the table's single numeric column.
* COST, optional, names a column of seconds each evaluation would have taken: a worker sleeps that
  long, times SCALE (default 1), so workers finish out of order as real training does.
* PATH may also name a table shipped with evolve: ``nb201-cifar10`` (``evolve/training/tables``).

A genome absent from the table fails that child, naming it; a malformed table is refused before
anything is written, naming the file and the column (``ConfigError``).
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from evolve.config import ConfigError, RunConfig, TableSpec, parse_table_spec
from evolve.training.fitness import FAILED
from evolve.training.outcome import Outcome
from genomes import Genome, GenomeError, Mutation, SearchSpace, genome_class

BUILT_IN = ("nb201-cifar10",)
KEY_NAME = "arch"
def table_url(path: str) -> str:
    """A built-in table's file, or ``path`` itself."""
    if path in BUILT_IN:
        return str(resources.files("evolve.training") / "tables" / f"{path}.parquet")
    return path


@dataclass(frozen=True)
class Table:
    """A loaded table: metric (and cost) per genome string."""

    path: str
    key: str
    metric: str
    values: dict[str, float]
    cost: str | None = None
    costs: dict[str, float] | None = None

    def best(self) -> tuple[str, float]:
        """The table's optimum: its best row's key and metric."""
        key = max(self.values, key=self.values.__getitem__)
        return key, self.values[key]


def load_table(spec: TableSpec, kind: str, storage_options: dict[str, Any] | None = None) -> Table:
    """The table ``spec`` names, checked against genome kind ``kind`` (ConfigError says what is wrong)."""
    try:
        return _load(spec, kind, json.dumps(storage_options or {}, sort_keys=True))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing file, a denied bucket, a file that is not a table
        raise ConfigError(f"fitness: cannot read table {spec.path!r}: {type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=8)
def _load(spec: TableSpec, kind: str, storage_options: str) -> Table:
    """Cached per process: every worker's evaluator of a run, and every run of a bench, read it once.
    ``storage_options``: as JSON, so that it can key the cache."""
    columns = _read_columns(table_url(spec.path), spec.path, json.loads(storage_options))
    key = _key_column(columns)
    metric = _metric_column(columns, spec)
    parse = _string_parser(kind)
    values: dict[str, float] = {}
    costs: dict[str, float] | None = {} if spec.cost else None
    cost_values = columns.numbers(spec.cost) if spec.cost else None
    for row, (text, value) in enumerate(zip(columns.values[key], columns.numbers(metric)), start=1):
        where = f"fitness: table {spec.path!r}, row {row}"
        if not isinstance(text, str):
            raise ConfigError(f"{where}: column {key!r} is empty")
        try:
            canonical = parse(text)
        except GenomeError as exc:
            raise ConfigError(f"{where}: column {key!r} holds {text!r}, not a {kind} genome: {exc}") from None
        if canonical in values:
            raise ConfigError(f"{where}: column {key!r} repeats {text!r}")
        if value is None or not math.isfinite(value):
            raise ConfigError(f"{where}: column {metric!r} is {value!r}, not a finite number")
        values[canonical] = value
        if costs is not None and cost_values is not None:
            cost = cost_values[row - 1]
            if cost is None or not math.isfinite(cost) or cost < 0:
                raise ConfigError(f"{where}: cost column {spec.cost!r} is {cost!r}, not a number of seconds >= 0")
            costs[canonical] = cost
    if not values:
        raise ConfigError(f"fitness: table {spec.path!r} has no rows")
    return Table(path=spec.path, key=key, metric=metric, values=values, cost=spec.cost, costs=costs)


@dataclass(frozen=True)
class _Columns:
    """A table's columns as Python lists, and each column's Arrow type."""

    path: str
    values: dict[str, list[Any]]
    types: dict[str, str]

    def names(self) -> list[str]:
        return list(self.values)

    def strings(self) -> list[str]:
        return [n for n, t in self.types.items() if t in ("string", "large_string")]

    def numeric(self) -> list[str]:
        return [n for n, t in self.types.items() if t.startswith(("int", "uint", "float", "double", "decimal"))]

    def numbers(self, name: str) -> list[float | None]:
        if name not in self.values:
            raise ConfigError(f"fitness: table {self.path!r} has no column {name!r} (columns: {self.names()})")
        if name not in self.numeric():
            raise ConfigError(f"fitness: column {name!r} of table {self.path!r} is {self.types[name]}, not numbers")
        return [None if v is None else float(v) for v in self.values[name]]


def _read_columns(url: str, path: str, storage_options: dict[str, Any]) -> _Columns:
    import fsspec
    import pyarrow.csv
    import pyarrow.parquet

    with fsspec.open(url, "rb", **storage_options) as f:
        data = f.read()
    if data.startswith(b"PAR1"):
        table = pyarrow.parquet.read_table(io.BytesIO(data))
    else:
        table = pyarrow.csv.read_csv(io.BytesIO(data))
    return _Columns(path, {name: table.column(name).to_pylist() for name in table.column_names},
                    {field.name: str(field.type) for field in table.schema})


def _key_column(columns: _Columns) -> str:
    strings = columns.strings()
    if len(strings) == 1:
        return strings[0]
    if KEY_NAME in strings:
        return KEY_NAME
    if not strings:
        raise ConfigError(f"fitness: table {columns.path!r} has no string column of genomes "
                          f"(columns: {columns.names()})")
    raise ConfigError(f"fitness: table {columns.path!r} has several string columns {strings}: name the genomes' "
                      f"column {KEY_NAME!r}")


def _metric_column(columns: _Columns, spec: TableSpec) -> str:
    if spec.metric is not None:
        columns.numbers(spec.metric)  # names a missing or non-numeric column
        return spec.metric
    numbers = [name for name in columns.numeric() if name != spec.cost]
    if len(numbers) == 1:
        return numbers[0]
    if not numbers:
        raise ConfigError(f"fitness: table {spec.path!r} has no numeric column to maximise "
                          f"(columns: {columns.names()})")
    raise ConfigError(f"fitness: table {spec.path!r} has several numeric columns {numbers}: choose one with "
                      f"'table:{spec.path}#COLUMN'")


def _string_parser(kind: str):
    """The kind's string form, canonicalised (``from_string`` then ``to_string``)."""
    cls = genome_class(kind)
    if not hasattr(cls, "from_string"):
        raise ConfigError(f"fitness: a table fitness looks genomes up by their string form, which genome "
                          f"{kind!r} has not; use genome = 'nb201'")
    return lambda text: cls.from_string(text).to_string()


def table_of(config: RunConfig) -> Table:
    """The run's table, loaded and checked (ConfigError names the file and the column)."""
    return load_table(parse_table_spec(config.fitness), config.genome, config.storage_options)


def genome_key(genome: Genome) -> str:
    return genome.to_string()  # type: ignore[attr-defined]


class TableEvaluator:
    """The evaluator for a table fitness (``evolve.training.evaluate.Evaluator``): a lookup per child.

    A lookup is instant, so the worker writes each child before the next selection
    (``overlaps_writes``): a run with one worker is then the serial algorithm itself."""

    overlaps_writes = False

    def __init__(self, config: RunConfig, space: SearchSpace) -> None:
        self.spec = parse_table_spec(config.fitness)
        self.table = table_of(config)
        self.space = space

    def evaluate(self, genome: Genome, parent_weights: bytes | None, seed: int,
                 mutation: Mutation | None = None) -> Outcome:
        started = time.perf_counter()
        shape, outputs = self.space.input_shape, self.space.num_classes
        params, flops = genome.param_count(shape, outputs), genome.flops(shape, outputs)
        key = genome_key(genome)
        value = self.table.values.get(key)
        if value is None:
            return Outcome(fitness=FAILED, status="failed", params=params, flops=flops,
                           reason=f"{key} is not in table {self.table.path}")
        if self.table.costs is not None and self.spec.scale:
            time.sleep(self.table.costs[key] * self.spec.scale)
        return Outcome(fitness=value, params=params, flops=flops, train_seconds=time.perf_counter() - started,
                       extra={self.table.metric: value})
