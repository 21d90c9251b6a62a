"""The README as a test: every shell and Python block, in order, in a fresh folder, on a tiny budget.

A user pastes the README's blocks into a shell or a notebook one after another, in a checkout (the
install line says ``pip install -e .``); each must work as pasted. The only changes this test makes
are in ``CHANGES`` below, each with its reason, and each must still match the README (so a README
edit cannot quietly leave one behind). A block the test cannot run says why on the line above it,
``<!-- not run by tests/test_readme.py: REASON -->``; there are few, and each is named in
``NOT_RUN``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

TINY = "--population 4 --steps 4 --set train.batches=10 --set final_batches=20 --no-reference"
CHANGES = [  # (README text, what the test runs instead, why)
    ("pip install torch==2.13.0 -e . && evolve run\n", f"evolve run {TINY}\n",
     "installed already, by the same command (.ci/run); the demo's budget is ten minutes"),
    ("evolve finalize runs/demo ", "evolve finalize runs/demo --batches 20 --cycles 2 --top 2 --prune-batches 10 ",
     "a tiny budget"),
    ('population=10, steps=40, executor="local")', 'population=4, steps=4, executor="local", '
     'train={"batches": 10}, final_batches=20, reference=False)', "a tiny budget"),
    ("population=6, steps=30, executor=\"local\")", "population=4, steps=2, executor=\"local\")", "a tiny budget"),
    ("--set train.batches=300 --set keep=all", f"--set train.batches=10 --set keep=all {TINY}", "a tiny budget"),
    ("http://minio:9000", "{endpoint}", "a real S3 API on loopback (moto's server) stands in for MinIO"),
]
NOT_RUN = {
    "it is the command that runs that test",
    "it needs nats_bench and its multi-GB benchmark files",
    "another library's code, for comparison",
    "it needs a cloud account (tests/test_cluster_yaml.py checks cluster.yaml)",
}
MARK = re.compile(r"<!-- not run by tests/test_readme.py: (.+?) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass
class Block:
    line: int
    language: str
    code: str
    not_run: str | None


def blocks(text: str) -> list[Block]:
    out = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        mark = MARK.fullmatch(before.rstrip("\n").rsplit("\n", 1)[-1])
        out.append(Block(before.count("\n") + 1, match.group(1), match.group(2), mark.group(1) if mark else None))
    return out


def runnable(text: str) -> list[Block]:
    return [b for b in blocks(text) if b.language in ("bash", "sh", "python") and b.not_run is None]


def test_every_block_the_test_skips_says_why_and_every_change_still_matches():
    text = README.read_text()
    every = blocks(text)
    assert {b.not_run for b in every if b.not_run} == NOT_RUN
    assert {b.language for b in every} <= {"bash", "sh", "python", "toml", ""}, "a new kind of block: run it here"
    for old, _, why in CHANGES:
        assert old in text, f"README no longer says {old!r} ({why}): update CHANGES"
    assert len(runnable(text)) >= 8


@pytest.mark.slow
def test_the_readme_runs_as_pasted(tmp_path):
    from bench.common import moto_server

    folder = tmp_path / "checkout"
    folder.mkdir()
    shutil.copytree(ROOT / "examples", folder / "examples")  # what the README's commands name in a checkout
    with moto_server(["bucket"]) as endpoint:
        (folder / "s3.json").write_text(json.dumps({"client_kwargs": {"endpoint_url": endpoint}}))
        text = README.read_text()
        for old, new, _ in CHANGES:
            text = text.replace(old, new.replace("{endpoint}", endpoint))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
               "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}  # evolve, python3
        env.pop("PYTHONPATH", None)
        for block in runnable(text):
            command = ["bash", "-euo", "pipefail", "-c", block.code] if block.language != "python" else \
                [sys.executable, "-c", block.code]
            started = time.monotonic()
            done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
            print(f"README line {block.line}: {time.monotonic() - started:.1f} s")
            assert done.returncode == 0, (f"README line {block.line} ({block.language}) exited {done.returncode}:\n"
                                          f"{block.code}\n--- stderr:\n{done.stderr[-3000:]}\n--- stdout:\n"
                                          f"{done.stdout[-1500:]}")
    assert (folder / "model" / "model.json").exists() and (folder / "runs" / "demo" / "run.json").exists()
