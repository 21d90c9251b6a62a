"""`evolve finalize`: from the search to the model you ship: retraining with snapshots, ensembles, distillation.

Each stage is a create-once record under ``results/finalize/`` (``evolve.store.keys``), its weights written
first, each under a key of their own; a stage whose record exists is never redone, so a finalize
killed mid-stage and run again redoes only that stage, and two racing finalizes record each stage
once (the loser deletes its weights)::

    retrain     the best architecture from scratch, M cycles of cosine annealing over B batches with a
                snapshot at the end of each (Huang et al. 2017, seed 003); the last is the retrained model
    snapshots   those M snapshots as one ensemble (softmax outputs averaged): no training
    member-<s>  each other of the top K distinct architectures by fitness, trained as ``retrain``
    top-<K>     the K retrained architectures as one ensemble
    distill     the best architecture trained as ``retrain``, on the top-K ensemble's soft targets
                (temperature T, Hinton et al. 2015, seed 000) and the labels
    prune       the retrained model's channels pruned by their Fisher estimates to a share of its
                parameters, then fine-tuned (Theis et al. 2018, seed 001; ``evolve.training.prune``)

Training reads the run's final-training splits (``final_data``: by default training and validation
together) with LeNet-5's recipe per cycle (``evolve.training.lenet``, cosine from its peak rate); the
test split is only measured. ``evolve.final.table`` lays the stages out as Real et al. do (test accuracy,
parameters, FLOPs, inference time, compute), with the best as found and LeNet-5 beside them.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evolve.config import RunConfig
from evolve.final.final_model import final_splits, run_data
from evolve.runner.launch import init_ray
from evolve.seeding import derive_seed
from evolve.store.backend import Store, StoreError
from evolve.store.keys import finalize_key, finalize_weights_key, individual_key, pin_key
from evolve.store.snapshot import Snapshot
from evolve.training.prune import fisher_prune
from genomes import genome_from_json

STAGES = ("retrain", "snapshots", "top", "distill", "prune")
INFER_IMAGES = 256  # images per timed forward pass (inference ms per image)


@dataclass(frozen=True)
class Plan:
    batches: int = 4000  # per trained model
    cycles: int = 4  # snapshots per trained model
    top: int = 3  # distinct architectures in the top-K ensemble
    temperature: float = 4.0
    alpha: float = 0.9  # the soft targets' share of the distillation loss
    prune_target: float = 0.5  # the pruned model's parameters, at most, as a share of the retrained one's
    prune_batches: int = 1000  # fine-tuning after pruning
    start: str = "scratch"  # retrain and members from: "scratch", or "weights" (each individual's, as evolved)
    stages: tuple[str, ...] = STAGES

    def __post_init__(self) -> None:
        if self.cycles < 1 or self.batches < self.cycles:
            raise ValueError(f"cycles: need 1 <= cycles <= batches, got cycles {self.cycles}, batches {self.batches}")
        if self.top < 2:
            raise ValueError(f"top: an ensemble needs at least 2 architectures, got {self.top}")
        if not 0 < self.prune_target < 1:
            raise ValueError(f"prune_target: a share of the parameters in (0, 1), got {self.prune_target!r}")
        if self.prune_batches < 0:
            raise ValueError(f"prune_batches: must be >= 0, got {self.prune_batches!r}")
        if self.start not in ("scratch", "weights"):
            raise ValueError(f"start: 'scratch' or 'weights', got {self.start!r}")
        if unknown := [s for s in self.stages if s not in STAGES]:
            raise ValueError(f"stages: unknown {unknown[0]!r}; known: {', '.join(STAGES)}")


@dataclass
class FinalizeReport:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its record
    done_before: list[str] = field(default_factory=list)  # stages found recorded, not redone


class FinalizeError(StoreError):
    """A finalize that cannot go on (nothing to finalize, other settings than the store's, a failed
    training that the rest would build on, weights gone); one line."""


def finalize(store: Store, config: RunConfig, plan: Plan = Plan(),
             on_stage: Callable[[str, bool], None] | None = None, executor: str = "local") -> FinalizeReport:
    """Run the stages of ``plan`` that are not recorded yet (``on_stage(name, done_before)`` before each),
    in three phases; with ``executor`` "ray" the trainings of a phase run at once as Ray tasks, each
    with a worker's resources (``cpus_per_worker``, ``gpus_per_worker``)::

        1  retrain, member-<s> for each other top architecture     trainings, independent
        2  snapshots, top-<K>                                       ensembles of phase 1's models
        3  distill, prune                                           trainings on phases 1 and 2's models

    The first finalize of a store fixes what it works on (``plan``: the top architectures and the
    settings), so a later one, even while the run goes on, builds on the same; other settings are
    refused."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor: 'local' or 'ray', got {executor!r}")
    architectures = _settle_plan(store, plan)["architectures"]
    try:
        return _finalize(store, config, plan, architectures, on_stage, executor)
    finally:
        release_pins(store, architectures)


def _finalize(store: Store, config: RunConfig, plan: Plan, architectures: list[dict[str, Any]],
              on_stage: Callable[[str, bool], None] | None, executor: str) -> FinalizeReport:
    report = FinalizeReport()
    wanted = set(plan.stages) | ({"top"} if "distill" in plan.stages else set())
    wanted |= {"retrain"} if wanted & {"snapshots", "top", "prune"} else set()
    if "retrain" not in wanted:
        return report
    local = _Local(store, config, plan)
    run = local if executor == "local" else _OnRay(store, config, plan)
    members = [f"member-{a['step']}" for a in architectures[1:]] if "top" in wanted else []
    _phase(store, ["retrain", *members], run, report, on_stage)
    _require_ok(report.records["retrain"], "retrain")
    ensembles = ["snapshots"] if "snapshots" in wanted else []
    if "top" in wanted:
        size = len(_members(store, architectures))
        if size < 2:
            raise FinalizeError(f"{store.url}: finalize: fewer than 2 of the top architectures trained; no ensemble")
        ensembles.append(f"top-{size}")
    _phase(store, ensembles, local, report, on_stage)
    trainings = ["distill"] if "distill" in wanted else []
    if "prune" in wanted:
        trainings.append("prune")
    _phase(store, trainings, run, report, on_stage)
    return report


def release_pins(store: Store, architectures: list[dict[str, Any]]) -> list[int]:
    """Unpin each planned individual whose weights no stage will read again: the best's once retrain
    and distill are recorded (or retrain failed, so distill never runs), another's once its member
    training is; the steps unpinned."""
    released = []
    retrain = store.read_json(finalize_key("retrain"))
    for i, arch in enumerate(architectures):
        key = pin_key(arch["step"], "finalize")
        if store.read_json(key) is None:
            continue
        if i == 0:
            settled = retrain is not None and (retrain.get("status") != "ok"
                                               or store.read_json(finalize_key("distill")) is not None)
        else:
            settled = store.read_json(finalize_key(f"member-{arch['step']}")) is not None
        if settled:
            store.delete(key)
            released.append(arch["step"])
    return released


def _phase(store: Store, names: list[str], run: Callable[[list[str]], list[dict[str, Any]]],
           report: FinalizeReport, on_stage: Callable[[str, bool], None] | None) -> None:
    todo = []
    for name in names:
        kept = store.read_json(finalize_key(name))
        if on_stage:
            on_stage(name, kept is not None)
        if kept is None:
            todo.append(name)
        else:
            report.done_before.append(name)
            report.records[name] = kept
    report.records.update(zip(todo, run(todo)))


class _Local:
    """Builds stages one after the other in this process, the run's data loaded once."""

    def __init__(self, store: Store, config: RunConfig, plan: Plan) -> None:
        self.store, self.config, self.plan, self.data = store, config, plan, None

    def __call__(self, names: list[str]) -> list[dict[str, Any]]:

        out = []
        for name in names:
            self.data = self.data or run_data(self.config)
            out.append(build_stage(self.store, self.config, self.plan, name, self.data))
        return out


class _OnRay:
    """Builds a phase's stages at once, a Ray task each with a worker's resources."""

    def __init__(self, store: Store, config: RunConfig, plan: Plan) -> None:
        self.store, self.config, self.plan = store, config, plan

    def __call__(self, names: list[str]) -> list[dict[str, Any]]:
        if not names:
            return []

        ray = init_ray(self.config)
        task = ray.remote(build_stage).options(num_cpus=self.config.cpus_per_worker,
                                               num_gpus=self.config.gpus_per_worker, max_retries=3)
        try:
            return ray.get([task.remote(self.store, self.config, self.plan, name) for name in names])
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, FinalizeError) else FinalizeError(f"finalize on Ray: {exc}")) from None


def build_stage(store: Store, config: RunConfig, plan: Plan, name: str, data: Any = None) -> dict[str, Any]:
    """Build stage ``name`` from the stages it needs (recorded before) and record it; its record (a
    racing finalize's, if that one recorded it first). ``data``: the run's splits (loaded if None)."""

    data = data or run_data(config)
    architectures = _settle_plan(store, plan)["architectures"]
    best = architectures[0]
    if name == "retrain" or name.startswith("member-"):
        arch = best if name == "retrain" else next(
            (a for a in architectures[1:] if name == f"member-{a['step']}"), None)
        if arch is None:
            raise FinalizeError(f"{store.url}: finalize: {name} is none of the plan's architectures")
        built = _train_stage(arch, config, data, plan, name, start=_evolved_weights(store, arch, plan))
    elif name == "snapshots":
        built = _ensemble_stage([(best["genome"], w) for w in _keys(_needed(store, "retrain"))], store, data)
    elif name.startswith("top-"):
        built = _ensemble_stage(_members(store, architectures), store, data)
    elif name == "distill":
        members = _members(store, architectures)
        built = _train_stage(best, config, data, plan, "distill", seed_of="retrain",
                             teachers=_modules(members, store, data), ensemble=_needed(store, f"top-{len(members)}"),
                             start=_evolved_weights(store, best, plan))
    elif name == "prune":
        built = _prune_stage(_needed(store, "retrain"), config, data, plan, store)
    else:
        raise FinalizeError(f"finalize: unknown stage {name!r}")
    return _record(store, name, *built)


def _evolved_weights(store: Store, arch: dict[str, Any], plan: Plan) -> bytes | None:
    """The individual's weights as evolved (pinned by the plan) when ``plan.start`` is "weights"."""
    if plan.start != "weights":
        return None
    record = store.read_json(individual_key(arch["step"])) or {}
    blob = store.read_bytes(record["weights"]["key"]) if record.get("weights") else None
    if blob is None:
        raise FinalizeError(f"{store.url}: individual {arch['step']}'s weights are gone (deleted before finalize "
                            "pinned them); finalize from scratch, or a run with keep = 'all'")
    return blob


def _needed(store: Store, name: str) -> dict[str, Any]:
    record = store.read_json(finalize_key(name))
    if record is None:
        raise FinalizeError(f"{store.url}: finalize: {name} is not recorded, and a later stage needs it")
    _require_ok(record, name)
    return record


def _members(store: Store, architectures: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """The top-K ensemble's members: the retrained best, then each other architecture whose training
    succeeded (a member that failed, nan loss, is left out)."""
    members = [(architectures[0]["genome"], _keys(_needed(store, "retrain"))[-1])]
    for arch in architectures[1:]:
        record = store.read_json(finalize_key(f"member-{arch['step']}"))
        if record is not None and record.get("status") == "ok":
            members.append((arch["genome"], _keys(record)[-1]))
    return members


def _settle_plan(store: Store, plan: Plan) -> dict[str, Any]:
    """``results/finalize/plan.json``, written once: the top architectures and the settings."""
    key = finalize_key("plan")
    kept = store.read_json(key)
    settings = {"batches": plan.batches, "cycles": plan.cycles, "top": plan.top, "temperature": plan.temperature,
                "alpha": plan.alpha, "prune_target": plan.prune_target, "prune_batches": plan.prune_batches,
                "start": plan.start}
    later = {"prune_target", "prune_batches", "start"}  # a plan fixed before these existed takes them as given
    if kept is None:
        ranked = top_architectures(Snapshot.read(store), plan.top)
        if not ranked:
            raise FinalizeError(f"{store.url}: no individuals to finalize")
        if plan.start == "weights":  # pinned before the plan names them: gc keeps their weights from here on
            for r in ranked:
                store.create_json(pin_key(r["step"], "finalize"), {"step": r["step"], "by": "evolve finalize",
                                                                   "created_at": time.time()})
        store.create_json(key, {"stage": "plan", **settings, "created_at": time.time(),
                                "architectures": [{"step": r["step"], "genome": r["genome"],
                                                   "fitness": r["fitness"]} for r in ranked]})
        kept = store.read_json(key)
        planned = {a["step"] for a in kept["architectures"]} if kept.get("start") == "weights" else set()
        for r in ranked if plan.start == "weights" else []:  # a racing finalize's plan won: unpin ours
            if r["step"] not in planned:
                store.delete(pin_key(r["step"], "finalize"))
    differ = [f"{k} {kept.get(k)!r} (now {v!r})" for k, v in settings.items()
              if kept.get(k, v if k in later else None) != v]
    if differ:
        raise FinalizeError(f"{store.url}: finalized before with other settings: {', '.join(differ)}; give the "
                            "same, or finalize a copy of the store")
    return kept


def _require_ok(record: dict[str, Any], name: str) -> None:
    if record.get("status") != "ok":
        raise FinalizeError(f"finalize: {name} of individual {record.get('step')} failed ({record.get('reason')}); "
                            "nothing can build on it")


def top_architectures(snapshot: Snapshot, k: int) -> list[dict[str, Any]]:
    """The best ``k`` individuals by fitness (of equals the earliest) with distinct architectures."""
    seen: set[str] = set()
    out = []
    ok = [r for r in snapshot.individuals.values()
          if r.get("status", "ok") == "ok" and math.isfinite(float(r["fitness"]))]
    for record in sorted(ok, key=lambda r: (-float(r["fitness"]), r["step"])):
        arch = record.get("hash") or str(record["genome"])
        if arch not in seen:
            seen.add(arch)
            out.append(record)
        if len(out) == k:
            break
    return out


# -- stages -----------------------------------------------------------------------------------


def _record(store: Store, name: str, record: dict[str, Any], weights: list[bytes]) -> dict[str, Any]:
    """Weights first, under keys of our own; then the stage's record, create-once (a loser deletes its weights)."""
    nonce = uuid.uuid4().hex[:12]
    infos = []
    for i, blob in enumerate(weights):
        key = finalize_weights_key(name, i, nonce)
        store.create_blob(key, blob)
        infos.append({"key": key, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)})
    record = {"stage": name, **record, "weights": infos, "host": socket.gethostname(), "pid": os.getpid(),
              "created_at": time.time()}
    if not store.create_json(finalize_key(name), record):
        for info in infos:
            store.delete(info["key"])
    return store.read_json(finalize_key(name)) or record


def _keys(record: dict[str, Any] | None) -> list[str]:
    return [w["key"] for w in (record or {}).get("weights") or []]


def cycle_recipe(config: RunConfig, channels: int, batches: int) -> Any:
    """LeNet-5's recipe (``evolve.training.lenet``) as one cosine cycle from its peak rate, no warm-up."""
    from evolve.training.lenet import recipe_for

    return recipe_for(config.train, channels, batches=batches, device=config.train.device).model_copy(
        update={"schedule": "cosine", "warmup": 0.0})


def _train_stage(individual: dict[str, Any], config: RunConfig, data: Any, plan: Plan, name: str,
                 seed_of: str | None = None, teachers: list[Any] | None = None,
                 ensemble: dict[str, Any] | None = None, start: bytes | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """Train ``individual``'s architecture for ``plan.cycles`` cosine cycles, a snapshot each: from scratch,
    or from the weights ``start`` (safetensors bytes).

    ``seed_of``: another stage whose initialisation and batch order to use (distillation uses
    retraining's, so that the loss is all that differs between them)."""
    import torch

    from evolve.training.train import Trainer, build_module, count_flops, weights_from_bytes, weights_to_bytes

    seed = derive_seed(config.seed, "finalize", seed_of or name)
    model = build_module(genome_from_json(individual["genome"]), data.input_shape, data.num_classes, seed)
    if start is not None:
        model.load_state_dict(weights_from_bytes(start))
    model = model.to(data.device)
    splits = final_splits(config, data)
    per_cycle = plan.batches // plan.cycles
    trainer = Trainer(splits, cycle_recipe(config, data.input_shape[0], per_cycle), data.device, max_params=10**12)
    loss_fn = None if teachers is None else distillation_loss(teachers, plan.temperature, plan.alpha)
    snapshots, seconds, finite = [], 0.0, True
    for cycle in range(plan.cycles):
        fit = trainer.fit(model, trainer.config.learning_rate, per_cycle, seed + cycle, loss_fn=loss_fn)
        seconds += fit.seconds
        finite &= fit.finite
        snapshots.append(weights_to_bytes(model))
    record: dict[str, Any] = {
        "step": individual["step"], "genome": individual["genome"], "batches": per_cycle * plan.cycles,
        "cycles": plan.cycles, "data": config.final_data, "train_seconds": seconds,
        "start": "scratch" if start is None else "weights",
        "params": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, data.x_test[:1]), "infer_ms": _infer_ms([model], data),
        "status": "ok" if finite else "failed", "reason": None if finite else "nan loss",
    }
    if teachers is not None:
        record.update(temperature=plan.temperature, alpha=plan.alpha, teacher=ensemble["stage"] if ensemble else None)
    with torch.no_grad():
        record["test_accuracy"] = _accuracy([model], data) if finite else None
        record["snapshot_test_accuracy"] = [_accuracy([_load(individual["genome"], s, data)], data)
                                            for s in snapshots] if finite else []
    return record, snapshots


def _ensemble_stage(members: list[tuple[dict[str, Any], str]], store: Store, data: Any
                    ) -> tuple[dict[str, Any], list[bytes]]:
    """Members (genome, weights key) as one ensemble: softmax outputs averaged; nothing trained, nothing written."""
    from evolve.training.train import count_flops

    models = _modules(members, store, data)  # the weights of recorded stages: a missing file is refused
    return {"members": [key for _, key in members], "size": len(models), "test_accuracy": _accuracy(models, data),
            "params": sum(p.numel() for m in models for p in m.parameters()),
            "flops": sum(count_flops(m, data.x_test[:1]) for m in models), "infer_ms": _infer_ms(models, data),
            "train_seconds": 0.0, "status": "ok"}, []


def distillation_loss(teachers: list[Any], temperature: float, alpha: float) -> Callable[..., Any]:
    """Hinton et al. 2015: the KL divergence from the teachers' averaged soft targets at ``temperature``
    (scaled by T², so its gradients keep their size), and ``1 - alpha`` of the labels' cross-entropy."""
    import torch
    import torch.nn.functional as F

    for teacher in teachers:
        teacher.eval()

    def loss(logits: Any, x: Any, y: Any) -> Any:
        with torch.no_grad():
            target = torch.stack([F.softmax(t(x).float() / temperature, 1) for t in teachers]).mean(0)
        soft = F.kl_div(F.log_softmax(logits.float() / temperature, 1), target, reduction="batchmean")
        return alpha * soft * temperature**2 + (1 - alpha) * F.cross_entropy(logits, y)

    return loss


def _prune_stage(retrain: dict[str, Any], config: RunConfig, data: Any, plan: Plan, store: Store
                 ) -> tuple[dict[str, Any], list[bytes]]:
    """The retrained model pruned to ``plan.prune_target`` of its parameters, fine-tuned (``evolve.training.prune``)."""
    import torch

    from evolve.training.train import count_flops, weights_from_bytes, weights_to_bytes

    key = _keys(retrain)[-1]
    blob = store.read_bytes(key)
    if blob is None:
        raise FinalizeError(f"{store.url}: finalize weights {key} are missing (evolve check reports it)")
    splits = final_splits(config, data)
    recipe = cycle_recipe(config, data.input_shape[0], plan.prune_batches)
    pruned = fisher_prune(genome_from_json(retrain["genome"]), weights_from_bytes(blob), splits, recipe,
                          plan.prune_target, plan.prune_batches, derive_seed(config.seed, "finalize", "prune"))
    model = pruned.model
    record: dict[str, Any] = {
        "step": retrain["step"], "genome": pruned.genome.to_json(), "from": "retrain", "target": plan.prune_target,
        "params_before": pruned.params_before, "params": pruned.params, "rounds": pruned.rounds,
        "removed": {str(k): v for k, v in sorted(pruned.removed.items())}, "batches": plan.prune_batches,
        "train_seconds": pruned.seconds, "flops": count_flops(model, data.x_test[:1]),
        "infer_ms": _infer_ms([model], data), "data": config.final_data,
        "status": "ok" if pruned.finite else "failed", "reason": None if pruned.finite else "nan loss",
    }
    with torch.no_grad():
        record["test_accuracy"] = _accuracy([model], data) if pruned.finite else None
    return record, [weights_to_bytes(model)]


# -- models -----------------------------------------------------------------------------------


def _load(genome: dict[str, Any], weights: bytes, data: Any) -> Any:
    from evolve.training.train import build_module, weights_from_bytes

    model = build_module(genome_from_json(genome), data.input_shape, data.num_classes, 0)
    model.load_state_dict(weights_from_bytes(weights))
    return model.to(data.device).eval()


def _modules(members: list[tuple[dict[str, Any], str]], store: Store, data: Any) -> list[Any]:
    out = []
    for genome, key in members:
        blob = store.read_bytes(key)
        if blob is None:
            raise FinalizeError(f"{store.url}: finalize weights {key} are missing (evolve check reports it)")
        out.append(_load(genome, blob, data))
    return out


def probabilities(models: list[Any], x: Any, batch: int = 1000) -> Any:
    """The models' softmax outputs on ``x``, averaged (one model: its own)."""
    import torch

    with torch.no_grad():
        for m in models:
            m.eval()
        parts = [torch.stack([torch.softmax(m(x[i:i + batch]).float(), 1) for m in models]).mean(0)
                 for i in range(0, x.shape[0], batch)]
    return torch.cat(parts)


def _accuracy(models: list[Any], data: Any) -> float:
    return int((probabilities(models, data.x_test).argmax(1) == data.y_test).sum()) / len(data.y_test)


def _infer_ms(models: list[Any], data: Any) -> float:
    """Milliseconds per image of one forward pass of every model over a batch (after one warm-up pass)."""
    import torch

    x = data.x_test[:INFER_IMAGES]
    cuda = x.device.type == "cuda"
    probabilities(models, x)
    if cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    for _ in range(3):
        probabilities(models, x)
    if cuda:
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) * 1000 / (3 * max(1, x.shape[0]))
