"""`evolve export-model`: a run's model as a folder that needs neither evolve nor its store.

The folder (``genomes.exported``) holds each member's weights as safetensors and ``model.json``:
the genomes, the input's shape and normalisation, the classes and how members combine;
``genomes.exported.load_model`` rebuilds it as a plain ``torch.nn.Module`` with torch and
``genomes`` alone. Before the folder is written, the rebuilt model is run on the run's test split
and its accuracy recorded beside the one the store holds; with ``onnx``, ``model.onnx`` is written
too (normalisation and the ensemble's combination in the graph) and checked against torch's
outputs with onnxruntime.

Which model (``MODELS``): ``best`` the best individual's final model where one was trained, else
the best as found; ``found`` the best as found; or a finalize stage: ``retrain``, ``snapshots``,
``top`` (the top-K ensemble), ``distill``, ``prune``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any

from evolve.config import RunConfig
from evolve.final.final_model import measured_test_accuracy
from evolve.store.backend import Store
from evolve.store.failures import ExportError
from evolve.store.keys import FINALIZE_PREFIX, finalize_key, finalize_stage_of, record_key_of_final
from evolve.store.snapshot import Snapshot
from evolve.training.datasets import run_dataset

MODELS = ("best", "found", "retrain", "snapshots", "top", "distill", "prune")
ONNX_TOLERANCE = 1e-4  # largest absolute difference allowed between onnxruntime's and torch's outputs
ONNX_OPSET = 18


@dataclass(frozen=True)
class Chosen:
    """A model in the store: its members (genome, weights key), how they combine, and where it came from."""

    members: list[tuple[dict[str, Any], str]]
    combine: str
    test_accuracy: float | None
    source: dict[str, Any]


def choose(store: Store, config: RunConfig, which: str = "best") -> Chosen:
    """The model ``which`` names (``MODELS``), as recorded in ``store``."""

    if which not in MODELS:
        raise ExportError(f"model: unknown {which!r}; known: {', '.join(MODELS)}")
    if which in ("best", "found"):
        best = Snapshot.read(store).best()
        if best is None:
            raise ExportError(f"{store.url}: no individuals to export")
        final = store.read_json(record_key_of_final(best["step"])) if which == "best" else None
        if final and final.get("status") == "ok" and final.get("weights"):
            return Chosen([(best["genome"], final["weights"]["key"])], "logits", final.get("test_accuracy"),
                          {"model": "final", "step": best["step"], "batches": final.get("batches")})
        if not best.get("weights"):
            raise ExportError(f"{store.url}: individual {best['step']} has no stored weights (a synthetic fitness, "
                              "or deleted by keep = 'needed')")
        return Chosen([(best["genome"], best["weights"]["key"])], "logits",
                      measured_test_accuracy(store, config, best), {"model": "found", "step": best["step"]})
    record = _stage(store, which)
    if which in ("retrain", "distill", "prune"):
        return Chosen([(record["genome"], record["weights"][-1]["key"])], "logits", record.get("test_accuracy"),
                      {"model": which, "step": record.get("step"), "batches": record.get("batches")})
    if which == "snapshots":
        genome = _stage(store, "retrain")["genome"]
        members = [(genome, key) for key in record["members"]]
    else:
        members = [(_stage(store, finalize_stage_of(key))["genome"], key) for key in record["members"]]
    return Chosen(members, "softmax-mean", record.get("test_accuracy"), {"model": record["stage"]})


def _stage(store: Store, name: str) -> dict[str, Any]:
    """A finalize stage's record, refused unless it succeeded. ``top``: the top-K ensemble with the most
    members (a finalize racing another may also have recorded a smaller one, before all members were)."""
    if name == "top":
        names = [k.removeprefix(FINALIZE_PREFIX + "top-").removesuffix(".json")
                 for k in store.list_keys(FINALIZE_PREFIX + "top-") if k.endswith(".json")]
        sizes = sorted(int(n) for n in names if n.isdigit())
        record = store.read_json(finalize_key(f"top-{sizes[-1]}")) if sizes else None
    else:
        record = store.read_json(finalize_key(name))
    if record is None:
        raise ExportError(f"{store.url}: no finalize {name} recorded; run evolve finalize {store.url} first")
    if record.get("status") != "ok":
        raise ExportError(f"{store.url}: finalize {name} failed ({record.get('reason')}); nothing to export")
    return record


def export_model(store: Store, config: RunConfig, out: str, which: str = "best", onnx: bool = False,
                 force: bool = False) -> dict[str, Any]:
    """Write the model ``which`` names to the folder ``out`` (see the module docstring); its manifest.

    The folder is built beside ``out`` and moved into place only once complete and checked, so a
    failed export leaves nothing half-written. An existing non-empty ``out`` is refused unless ``force``."""
    from genomes.exported import FORMAT, MANIFEST

    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not force:
        raise ExportError(f"{out}: exists and is not empty; choose another folder, or replace it (--force)")
    if onnx:
        _require_onnx()
    chosen = choose(store, config, which)
    dataset = run_dataset(config)
    building = os.path.join(os.path.dirname(out), f".tmp-export-{uuid.uuid4().hex[:8]}")
    os.makedirs(building)
    try:
        members = []
        for i, (genome, key) in enumerate(chosen.members):
            blob = store.read_bytes(key)
            if blob is None:
                raise ExportError(f"{store.url}: weights {key} are missing (evolve check reports it)")
            name = f"member-{i}.safetensors"
            with open(os.path.join(building, name), "wb") as f:
                f.write(blob)
            members.append({"genome": genome, "weights": name})
        c, h, w = dataset.input_shape
        manifest: dict[str, Any] = {
            "format": FORMAT, "combine": chosen.combine,
            "input": {"shape": [c, h, w], "pixels": "float32 (N, C, H, W): raw pixel values * (1 / scale), in [0, 1]",
                      "scale": dataset.scale, "mean": list(dataset.mean), "std": list(dataset.std)},
            "num_classes": dataset.num_classes, "classes": list(dataset.class_names) if dataset.class_names else None,
            "members": members, "stored_test_accuracy": chosen.test_accuracy,
            "source": {"store": store.url, "dataset": config.dataset, "seed": config.seed, **chosen.source},
            "created_at": time.time(),
        }
        _write_json(os.path.join(building, MANIFEST), manifest)
        model, accuracy = _measure(building, dataset)
        manifest.update(test_accuracy=accuracy, test_images=len(dataset.y_test))
        if onnx:
            manifest["onnx"] = _write_onnx(model, building, dataset)
        _write_json(os.path.join(building, MANIFEST), manifest)
        if os.path.exists(out):
            shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return manifest


def _write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def exported_inputs(dataset: Any) -> Any:
    """The test split as the exported model takes it: raw pixels * (1 / scale), float32, as the run scaled them."""
    import numpy as np
    import torch

    pixels = dataset.test_pixels.astype(np.float32)
    pixels *= np.float32(1.0 / dataset.scale)
    return torch.from_numpy(pixels)


def _measure(folder: str, dataset: Any) -> tuple[Any, float]:
    """The folder's model rebuilt by ``genomes.exported`` and its test accuracy."""
    import torch

    from genomes.exported import load_model

    model = load_model(folder)
    x, y = exported_inputs(dataset), torch.from_numpy(dataset.y_test)
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, x.shape[0], 1000)])
    return model, int((predicted == y).sum()) / len(y)


def _require_onnx() -> None:
    import importlib.util

    for name in ("onnx", "onnxruntime", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            raise ExportError(f"--onnx needs the onnx extra ({name} is not installed): pip install 'evolve[onnx]'")


def _write_onnx(model: Any, folder: str, dataset: Any) -> dict[str, Any]:
    """``model.onnx`` with a dynamic batch dimension; refused unless onnxruntime reproduces torch's outputs."""
    import logging
    import warnings

    import numpy as np
    import onnxruntime
    import torch

    path = os.path.join(folder, "model.onnx")
    x = exported_inputs(dataset)[:64]
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" and the like: nothing to act on
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, input_names=["pixels"], output_names=["scores"], dynamo=True,
                              dynamic_shapes={"x": {0: batch}}, opset_version=ONNX_OPSET, verbose=False,
                              external_data=False)
    finally:
        quiet.setLevel(level)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > ONNX_TOLERANCE:
        raise ExportError(f"the ONNX model's outputs differ from torch's by up to {diff:.2g} "
                          f"(allowed {ONNX_TOLERANCE:g}); nothing written")
    return {"file": "model.onnx", "opset": ONNX_OPSET, "max_abs_diff": diff, "checked_images": int(x.shape[0])}


__all__ = ["MODELS", "Chosen", "ExportError", "choose", "export_model", "exported_inputs"]
