"""The results of ``evolve finalize`` as Real et al. lay them out: one row per model (test accuracy,
parameters, FLOPs, inference time, compute), printed, written as Parquet, shown in the views."""

from __future__ import annotations

from typing import Any

from evolve.config import RunConfig
from evolve.final.final_model import compute_seconds, measured_test_accuracy
from evolve.store.backend import Store
from evolve.store.keys import FINALIZE_PREFIX, LENET_KEY, finalize_key, finalize_stage_of, record_key_of_final
from evolve.store.snapshot import Snapshot


def table(store: Store, config: RunConfig) -> list[dict[str, Any]]:
    """One row per model, as Real et al. lay out their results: the best as found, the run's final
    model, each finalize stage recorded so far, and LeNet-5 on the same split for reference."""

    snapshot = Snapshot.read(store)
    best = snapshot.best()
    rows: list[dict[str, Any]] = []
    if best is not None:
        metrics = best.get("metrics") or {}
        rows.append(_row("found", f"best as found (individual {best['step']})", measured_test_accuracy(store, config, best),
                         metrics.get("params"), metrics.get("flops"), None, compute_seconds(snapshot), 1))
        final = store.read_json(record_key_of_final(best["step"]))
        if final and final.get("status") == "ok":
            rows.append(_row("final", f"final model ({final['batches']:,} batches, one cycle)", final.get("test_accuracy"),
                             metrics.get("params"), metrics.get("flops"), None, final.get("train_seconds"), 1))
    rows += stage_rows(store)
    lenet = store.read_json(LENET_KEY)
    if lenet:
        rows.append(_row("lenet5", "reference: LeNet-5 (batch norm, one-cycle)", lenet.get("test_accuracy"), lenet.get("params"),
                         lenet.get("flops"), None, lenet.get("train_seconds"), 1))
    return rows


def stage_rows(store: Store) -> list[dict[str, Any]]:
    """The table's rows of the finalize stages recorded so far (no model is loaded or measured)."""
    rows: list[dict[str, Any]] = []
    labels = {"retrain": "retrained ({batches:,} batches, {cycles} cosine cycles)",
              "snapshots": "snapshot ensemble ({size} snapshots of one training)",
              "distill": "distilled from the top-K ensemble (T = {temperature:g})",
              "prune": "pruned to {share:.0%} of the parameters (Fisher), fine-tuned"}
    order = {"retrain": 0, "snapshots": 1, "distill": 3, "prune": 4}
    keys = [k for k in store.list_keys(FINALIZE_PREFIX) if k.endswith(".json")]
    for key in sorted(keys, key=lambda k: order.get(k.removeprefix(FINALIZE_PREFIX)[:-5], 2)):
        record = store.read_json(key) or {}
        name = record.get("stage", "")
        if name.startswith("member-") or name == "plan":
            continue
        label = labels.get(name, "top-{size} ensemble of distinct architectures" if name.startswith("top-") else name)
        share = (record.get("params") or 0) / (record.get("params_before") or 1)
        fields = {"size": 1, "batches": 0, "cycles": 0, "temperature": 0, **record, "share": share}
        rows.append(_row("top" if name.startswith("top-") else name, label.format(**fields),
                         record.get("test_accuracy"), record.get("params"), record.get("flops"),
                         record.get("infer_ms"), _stage_compute(store, record), record.get("size", 1)))
    return rows


def marks(store: Store) -> list[tuple[str, float]]:
    """(short label, test accuracy) of each finalize model recorded so far, for Figure 1."""
    short = {"retrain": "retrained", "snapshots": "snapshot ensemble", "distill": "distilled", "prune": "pruned"}
    return [(short.get(r["stage"], f"top-{r['members']} ensemble" if r["stage"] == "top" else r["stage"]),
             float(r["test_accuracy"])) for r in stage_rows(store) if r["test_accuracy"] is not None]


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (TensorBoard's text view)."""
    def cell(value: Any, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    lines = ["| model | test | parameters | MFLOPs | ms / image | compute s |", "|---|---|---|---|---|---|"]
    for r in rows:
        test = None if r["test_accuracy"] is None else 100 * r["test_accuracy"]
        flops = None if r["flops"] is None else r["flops"] / 1e6
        lines.append(f"| {r['model']} | {cell(test, '.2f')} | {cell(r['params'], ',')} | {cell(flops, '.2f')} | "
                     f"{cell(r['infer_ms'], '.3f')} | {cell(r['compute_seconds'], '.0f')} |")
    return "\n".join(lines)


def _row(stage: str, model: str, test: Any, params: Any, flops: Any, infer_ms: Any, seconds: Any,
         members: int) -> dict[str, Any]:
    return {"stage": stage, "model": model, "test_accuracy": test, "params": params, "flops": flops, "infer_ms": infer_ms,
            "compute_seconds": seconds, "members": members}


def _stage_compute(store: Store, record: dict[str, Any]) -> float:
    """A model's training seconds, with those of what it is made from: an ensemble's members' trainings,
    a distilled model's teacher."""
    own = float(record.get("train_seconds") or 0.0)
    stage = record.get("stage", "")
    if stage in ("snapshots", "prune"):
        return own + _seconds(store, "retrain")
    if stage.startswith("top-"):
        return own + sum(_seconds(store, finalize_stage_of(key))
                         for key in record.get("members") or [])
    if stage == "distill" and record.get("teacher"):
        return own + _stage_compute(store, store.read_json(finalize_key(record["teacher"])) or {})
    return own


def _seconds(store: Store, stage: str) -> float:
    return float((store.read_json(finalize_key(stage)) or {}).get("train_seconds") or 0.0)
