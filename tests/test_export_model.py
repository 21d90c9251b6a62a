"""evolve export-model: a folder that torch and genomes alone load, reproducing the recorded accuracy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import evolve
from evolve.cli.main import app
from evolve.final.export_model import exported_inputs
from evolve.training.datasets import load_dataset

STORES = Path(__file__).parent / "stores" / "0.1.0"

# what a user's script does: only torch and genomes (and the standard library)
LOADER = """
import json, sys
import torch
from genomes.exported import load_model

model = load_model(sys.argv[1])
x, y = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    predicted = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, x.shape[0], 1000)])
    scores = model(x[:32])
assert not any(name == "evolve" or name.startswith("evolve.") for name in sys.modules), "evolve was imported"
torch.save(scores, sys.argv[3])
print(json.dumps({"accuracy": int((predicted == y).sum()) / len(y), "module": isinstance(model, torch.nn.Module)}))
"""


@pytest.fixture(scope="module")
def finalized(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "store"
    shutil.copytree(STORES / "dna-digits", path)
    evolve.open(str(path)).finalize(batches=40, cycles=2, top=2, stages=("retrain", "snapshots", "top", "prune"),
                                     prune_batches=20)
    return path


@pytest.fixture(scope="module")
def inputs(finalized, tmp_path_factory) -> Path:
    """The run's test split as the exported model takes it, for the script."""
    import torch

    config = evolve.open(str(finalized)).config
    dataset = load_dataset(config.dataset, seed=config.seed, val_fraction=config.val_fraction)
    path = tmp_path_factory.mktemp("inputs") / "test.pt"
    torch.save((exported_inputs(dataset), torch.from_numpy(dataset.y_test)), path)
    return path


def _load_outside_evolve(folder: Path, inputs: Path, tmp_path: Path) -> tuple[dict, object]:
    import torch

    scores = tmp_path / "scores.pt"
    done = subprocess.run([sys.executable, "-c", LOADER, str(folder), str(inputs), str(scores)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), torch.load(scores, weights_only=True)


@pytest.mark.parametrize("model, members", [("best", 1), ("top", 2), ("snapshots", 2), ("prune", 1)])
def test_the_exported_model_reproduces_the_recorded_test_accuracy_with_torch_and_genomes_alone(
        finalized, inputs, tmp_path, model, members):
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["export-model", str(finalized), str(out), "--model", model])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "model.json").read_text())
    assert len(manifest["members"]) == members and manifest["combine"] == ("logits" if members == 1 else "softmax-mean")
    assert sorted(p.name for p in out.iterdir()) == [f"member-{i}.safetensors" for i in range(members)] + ["model.json"]
    loaded, _ = _load_outside_evolve(out, inputs, tmp_path)
    assert loaded["module"]
    assert loaded["accuracy"] == manifest["stored_test_accuracy"] == manifest["test_accuracy"]
    recorded = {"best": None, "top": "top-2", "snapshots": "snapshots", "prune": "prune"}[model]
    if recorded:
        stage = json.loads((finalized / "results" / "finalize" / f"{recorded}.json").read_text())
        assert loaded["accuracy"] == stage["test_accuracy"]


def test_the_onnx_file_matches_torch(finalized, inputs, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'evolve[onnx]')")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import torch

    out = tmp_path / "model"
    manifest = evolve.open(str(finalized)).export_model(str(out), "top", onnx=True)
    assert manifest["onnx"]["file"] == "model.onnx" and manifest["onnx"]["max_abs_diff"] <= 1e-4
    _, expected = _load_outside_evolve(out, inputs, tmp_path)
    x, _ = torch.load(inputs, weights_only=True)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x[:32], x[:5]):  # the batch dimension is free
        got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        assert got.shape == (batch.shape[0], 10)
        assert float(abs(torch.from_numpy(got) - expected[:batch.shape[0]]).max()) <= 1e-4


def test_export_refusals_name_what_is_wrong(finalized, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    cases = [(["export-model", str(finalized), str(tmp_path / "busy")], "exists and is not empty"),
             (["export-model", str(finalized), str(tmp_path / "a"), "--model", "distill"], "no finalize distill"),
             (["export-model", str(STORES / "gcnn-synthetic"), str(tmp_path / "b")], "no stored weights"),
             (["export-model", str(finalized), str(tmp_path / "c"), "--model", "worst"], "worst")]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    assert (tmp_path / "busy" / "x").read_text() == "mine"
    assert not (tmp_path / "a").exists() and not any(p.name.startswith(".tmp-export") for p in tmp_path.iterdir())
    forced = CliRunner().invoke(app, ["export-model", str(finalized), str(tmp_path / "busy"), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "busy" / "model.json").exists() and not (tmp_path / "busy" / "x").exists()


def test_a_broken_folder_is_named_by_the_loader(tmp_path):
    from genomes import GenomeError
    from genomes.exported import load_model

    with pytest.raises(GenomeError, match="model.json: not found"):
        load_model(str(tmp_path))
    (tmp_path / "model.json").write_text(json.dumps({"format": 1, "combine": "logits", "members": [{}],
                                                     "input": {"shape": [1, 8, 8], "mean": [0.1], "std": []}}))
    with pytest.raises(GenomeError, match=r"input.std must be 1 numbers"):
        load_model(str(tmp_path))


def test_onnx_of_evolved_dnas_whose_skips_are_resized(tmp_path):
    """A skip from a 14x14 vertex into a 4x4 one: ONNX's Resize would pick other rows than torch's nearest
    interpolation (by up to 0.37 here before genomes.dna.net gathered the rows itself)."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'evolve[onnx]')")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import random
    from types import SimpleNamespace

    import numpy as np

    from evolve.final.export_model import _write_onnx
    from genomes import DNA, SearchSpace
    from genomes.exported import ExportedModel

    space = SearchSpace(input_shape=(1, 28, 28), num_classes=10, max_params=300_000,
                        options={"initial_convs": 2, "initial_channels": 8})
    rng = random.Random(0)
    genome = DNA.initial(rng, space)
    for _ in range(30):
        genome, _ = genome.mutate(rng, space)
    assert genome.skips()
    model = ExportedModel([genome.to_module((1, 28, 28), 10).eval()], [0.1], [0.3], "logits").eval()
    pixels = np.random.default_rng(0).integers(0, 255, (16, 1, 28, 28), dtype=np.uint8)
    checked = _write_onnx(model, str(tmp_path), SimpleNamespace(test_pixels=pixels, scale=255.0))
    assert checked["max_abs_diff"] <= 1e-4


def test_top_exports_the_ensemble_with_every_member_when_a_racer_recorded_a_smaller_one(tmp_path):
    """Two finalizes at once: one ensembles the members recorded so far (top-2) before the other has
    recorded its member; then top-3 is built. The export takes top-3, whatever the names' order."""
    from evolve.final.finalize import Plan, build_stage

    path = tmp_path / "store"
    shutil.copytree(STORES / "dna-digits", path)
    run = evolve.open(str(path))
    settings = dict(batches=20, cycles=2, top=3)
    run.finalize(**settings, stages=("retrain", "top"))
    finalize_dir = path / "results" / "finalize"
    assert (finalize_dir / "top-3.json").exists()
    late = sorted(finalize_dir.glob("member-*.json"))[-1]
    held = late.read_bytes()
    late.unlink()
    build_stage(run.store, run.config, Plan(**settings), "top-2")
    late.write_bytes(held)
    top2, top3 = (json.loads((finalize_dir / f"top-{k}.json").read_text()) for k in (2, 3))
    assert len(top2["members"]) == 2 and len(top3["members"]) == 3
    manifest = run.export_model(str(tmp_path / "model"), "top")
    assert len(manifest["members"]) == 3 and manifest["test_accuracy"] == top3["test_accuracy"]


def _closure(*names: str) -> set[str]:
    """The installed distributions ``names`` need, themselves included (extras left out)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _link_installed(names: set[str], site: Path) -> None:
    """Put the installed distributions ``names`` (their packages and metadata) into ``site``, as pip would
    have, by linking the files already on this machine instead of downloading them again."""
    import importlib.metadata as metadata

    for name in names:
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)


def test_the_genomes_distribution_alone_loads_the_model_in_a_fresh_venv(finalized, inputs, tmp_path):
    """What the README tells a serving image to install, and nothing else: torch (with what it requires)
    and the genomes distribution built from genomes/pyproject.toml, which declares safetensors. The model
    loads there and reproduces the accuracy export-model recorded; evolve and Ray are not to be found."""
    import tomllib
    import venv

    root_dir = Path(__file__).resolve().parent.parent
    versions = [tomllib.loads((d / "pyproject.toml").read_text())["project"]["version"] for d in (root_dir, root_dir / "genomes")]
    assert versions[0] == versions[1], f"evolve {versions[0]} and evolve-genomes {versions[1]} must be released together"
    out = tmp_path / "model"
    manifest = evolve.open(str(finalized)).export_model(str(out), "best")
    source = tmp_path / "genomes-src"  # built from a copy: an in-tree build would leave build/ inside the package
    shutil.copytree(root_dir / "genomes", source,
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr

    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                               text=True, check=True).stdout.strip())
    _link_installed(_closure("torch"), site)  # the README: install the torch build you want first
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                                "--find-links", str(wheels), "evolve-genomes"], capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode != 0 and "safetensors" in installed.stderr, "the wheel must declare safetensors"
    _link_installed(_closure("safetensors"), site)  # what pip would fetch for it
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                                "--find-links", str(wheels), "evolve-genomes"], capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stderr

    isolated = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('evolve', 'ray', "
                               "'pyarrow', 'numpy') if u.find_spec(m)])"], capture_output=True, text=True, cwd=tmp_path)
    assert isolated.stdout.strip() == "[]", isolated.stdout + isolated.stderr
    scores = tmp_path / "scores.pt"
    done = subprocess.run([python, "-c", LOADER, str(out), str(inputs), str(scores)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == manifest["test_accuracy"]
