"""The records a store holds, as pydantic models: one definition that check, export and the views read.

Records are JSON objects written once (``evolve.store.keys`` names where). A store says which version of
these shapes it was written with in run.json's ``schema``; this release writes and reads
``SCHEMA`` (1) and refuses any other, saying so (``schema_problem``), so an older evolve never
misreads a newer store.

Reading is strict only where every reader relies on a field: an individual's ``step`` (an int),
``fitness`` (a number; NaN allowed) and ``genome`` (an object), a tombstone's
``killed_at_step``. A record that fails there is unreadable (readers skip it, ``evolve check``
reports it, naming the field). Everything else is lenient as the readers always were: a value of
the wrong type reads as missing, and fields this release does not know are kept (``extra``), so
stores written by earlier releases still read and resume (tests/test_records.py reads one).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError

SCHEMA = 1  # the record shapes this release writes (run.json's "schema")


class RecordError(ValueError):
    """A record that parses as JSON but lacks a field every reader relies on; names the field."""


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    return float(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _as_steps(value: Any) -> list[int]:
    return [int(v) for v in value if _as_int(v) is not None] if isinstance(value, list) else []


Int = Annotated[int | None, BeforeValidator(_as_int)]
Float = Annotated[float | None, BeforeValidator(_as_float)]
Str = Annotated[str | None, BeforeValidator(_as_str)]
Bool = Annotated[bool | None, BeforeValidator(_as_bool)]
Object = Annotated[dict[str, Any] | None, BeforeValidator(_as_dict)]
Steps = Annotated[list[int], BeforeValidator(_as_steps)]
Step = Annotated[StrictInt, Field(ge=0)]
Number = Annotated[float, BeforeValidator(_number)]  # NaN and infinities included


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The record as written: fields this release does not know included, unset ones left out."""
        return self.model_dump(mode="json", exclude_unset=True)


def _lenient(model: type[BaseModel]) -> Any:
    """A nested model that reads as None when it is not an object of that shape."""
    def read(value: Any) -> Any:
        if not isinstance(value, dict):
            return None
        try:
            return model.model_validate(value)
        except ValidationError:
            return None
    return BeforeValidator(read)


class Weights(_Record):
    key: str
    sha256: str
    bytes: int


class Mutation(_Record):
    name: Str = None
    params: Object = None


class Metrics(_Record):
    params: Int = None
    flops: Int = None
    batches: Int = None
    inherited: Float = None
    train_seconds: Float = None
    eval_seconds: Float = None
    final_loss: Float = None
    device: Str = None


class Timings(_Record):
    select_s: Float = None
    evaluate_s: Float = None
    write_s: Float = None
    total_s: Float = None


class Individual(_Record):
    """``individuals/<s>.json``: step s's child, its genome, fitness and how it came to be."""

    step: Step
    fitness: Number = Field(description="maximised; validation accuracy for the built-in trainer")
    genome: dict[str, Any]
    origin: Str = None  # initial, mutation or generation
    generation: Int = None
    parents: Steps = []
    mutation: Annotated[Mutation | None, _lenient(Mutation)] = None
    loser: Int = None
    attempt: Int = None
    raw_fitness: Float = None
    evaluations: Int = None
    val_accuracy: Float = None
    test_accuracy: Float = None
    status: Str = None
    reason: Str = None
    hash: Str = None
    metrics: Annotated[Metrics, BeforeValidator(lambda v: v if isinstance(v, dict) else {})] = Metrics()
    timings: Annotated[Timings, BeforeValidator(lambda v: v if isinstance(v, dict) else {})] = Timings()
    worker: Str = None
    adopted: Bool = None
    seed: Int = None
    weights: Annotated[Weights | None, _lenient(Weights)] = None
    created_at: Float = None

    @property
    def parent(self) -> int | None:
        """The first parent (whose weights a child inherits), None for the initial population."""
        return self.parents[0] if self.parents else None

    @property
    def ok(self) -> bool:
        return self.status in (None, "ok")

    @property
    def finite_fitness(self) -> float | None:
        f = float(self.fitness)
        return f if math.isfinite(f) else None


class Tombstone(_Record):
    """``deaths/<s>.json``: individual s died at step ``killed_at_step``'s selection."""

    step: Int = None
    killed_at_step: Step
    attempt: Int = None
    parent: Int = None
    by: Str = None
    created_at: Float = None


class Selection(_Record):
    """``selections/<s>-<attempt>.json`` (attempt 0 inside the claim): the pair a step settled on."""

    step: Int = None
    attempt: Int = None
    parent: Int = None
    loser: Int = None
    worker: Str = None


class Claim(_Record):
    """``claims/<s>.json``: who owns step s (and attempt 0's selection)."""

    step: Int = None
    worker: Str = None
    slot: Str = None
    selection: Annotated[Selection | None, _lenient(Selection)] = None
    created_at: Float = None


class Adoption(_Record):
    """``adoptions/<s>-<index>.json``: adopter ``index`` took over lapsed step s."""

    step: Int = None
    index: Int = None
    worker: Str = None
    created_at: Float = None


class Tested(_Record):
    """``results/tested/<s>.json``: individual s's test accuracy, measured once after the search."""

    step: Int = None
    test_accuracy: Float = None
    created_at: Float = None


MODELS: dict[str, type[_Record]] = {
    "individuals/": Individual, "deaths/": Tombstone, "claims/": Claim, "selections/": Selection,
    "adoptions/": Adoption, "results/tested/": Tested,
}

R = TypeVar("R", bound=_Record)


def model_for(key: str) -> type[_Record] | None:
    """The model of the record at ``key`` (None: a key whose records are read as plain JSON)."""
    return next((m for prefix, m in MODELS.items() if key.startswith(prefix)), None)


def parse(model: type[R], data: Any) -> R:
    """``data`` as ``model``; RecordError names the first field that every reader relies on and lacks."""
    if not isinstance(data, dict):
        raise RecordError(f"a {type(data).__name__}, not an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "record"
        if err["type"] == "missing":
            raise RecordError(f"{field} is missing") from None
        reason = err["msg"].removeprefix("Value error, ")
        raise RecordError(f"{field} is {err.get('input')!r}: {reason[0].lower() + reason[1:]}") from None


def problem(key: str, data: Any) -> str | None:
    """Why the record at ``key`` is unusable though it parses as JSON; None when it is usable."""
    model = model_for(key)
    if model is None:
        return None
    try:
        parse(model, data)
    except RecordError as exc:
        return str(exc)
    return None


def schema_problem(run: dict[str, Any]) -> str | None:
    """Why this release cannot read a store whose run.json is ``run`` (None: it can)."""
    schema = run.get("schema")
    if schema == SCHEMA:
        return None
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
        return f"schema {schema} is newer than this evolve reads ({SCHEMA}): upgrade evolve to read this store"
    return f"schema {schema!r}, this evolve reads {SCHEMA}"


# -- the export's row ------------------------------------------------------------------------


class ExportRow(BaseModel):
    """One individual as a row of the Parquet export; the Arrow schema is derived from these fields."""

    step: int = Field(description="the step that produced the individual")
    origin: str | None = Field(None, description="initial, mutation or generation")
    generation: int | None = Field(None, description="generational runs: the generation")
    parent: int | None = Field(None, description="the first parent's step (null for the initial population)")
    parents: list[int] = Field(description="all parents' steps (two after a crossover)")
    mutation: str | None = Field(None, description="the mutation's name (null for the initial population)")
    mutation_params: str | None = Field(None, description="the mutation's parameters, JSON")
    loser: int | None = Field(None, description="the individual killed to make room for this one")
    attempt: int | None = Field(None, description="the selection attempt that won the step")
    fitness: float | None = Field(None, description="validation accuracy (generational: averaged over evaluations)")
    raw_fitness: float | None = Field(None, description="this evaluation's fitness")
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    status: str | None = Field(None, description="ok or failed")
    reason: str | None = Field(None, description="why it failed")
    alive: bool = Field(description="no tombstone at export time")
    killed_at_step: int | None = Field(None, description="the step whose selection killed it")
    killed_by: str | None = Field(None, description="the worker that wrote the tombstone")
    params: int | None = Field(None, description="trainable parameters")
    flops: int | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    final_loss: float | None = None
    inherited: float | None = Field(None, description="share of parameters inherited from the parent")
    device: str | None = None
    select_s: float | None = Field(None, description="timings: selection")
    evaluate_s: float | None = Field(None, description="timings: training and evaluation")
    write_s: float | None = Field(None, description="timings: writing the record")
    total_s: float | None = Field(None, description="timings: the whole step")
    worker: str | None = None
    adopted: bool | None = Field(None, description="finished by a worker that adopted the step")
    seed: int | None = None
    created_at: datetime | None = Field(None, description="when the record was written")
    genome_kind: str | None = None
    genome_summary: str | None = Field(None, description="describe(): one line for people")
    genome: str | None = Field(None, description="the genome, JSON")
    hash: str | None = Field(None, description="architecture content hash")
    weights_key: str | None = Field(None, description="store key of the trained weights")

    @classmethod
    def of(cls, r: Individual, death: Tombstone | None, genome_text: str, summary: str) -> ExportRow:
        import json

        m, x, t = r.mutation, r.metrics, r.timings
        seed = r.seed if r.seed is not None and -(2**63) <= r.seed < 2**63 else None
        return cls.model_construct(
            step=r.step, origin=r.origin, generation=r.generation, parent=r.parent, parents=list(r.parents),
            mutation=m.name if m else None,
            mutation_params=json.dumps(m.params or {}, sort_keys=True) if m else None,
            loser=r.loser, attempt=r.attempt, fitness=float(r.fitness),
            raw_fitness=r.raw_fitness if r.raw_fitness is not None else float(r.fitness),
            val_accuracy=r.val_accuracy, test_accuracy=r.test_accuracy, status=r.status, reason=r.reason,
            alive=death is None, killed_at_step=death.killed_at_step if death else None,
            killed_by=death.by if death else None,
            params=x.params, flops=x.flops, train_seconds=x.train_seconds, eval_seconds=x.eval_seconds,
            final_loss=x.final_loss, inherited=x.inherited, device=x.device,
            select_s=t.select_s, evaluate_s=t.evaluate_s, write_s=t.write_s, total_s=t.total_s,
            worker=r.worker, adopted=r.adopted, seed=seed,
            created_at=datetime.fromtimestamp(r.created_at, tz=UTC) if r.created_at is not None else None,
            genome_kind=_as_str(r.genome.get("kind")), genome_summary=summary, genome=genome_text, hash=r.hash,
            weights_key=r.weights.key if r.weights else None,
        )
