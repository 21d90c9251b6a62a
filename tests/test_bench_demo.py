"""bench/demo.py end to end on a tiny run: the README's command, the store read back, the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import demo  # noqa: E402


@pytest.mark.slow
def test_demo_bench_runs_the_cli_and_trains_the_best_initial_as_the_final_model(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('population = 3\nsteps = 3\nworkers = 1\ndataset = "digits"\nfinal_batches = 12\n'
                      "[train]\nbatches = 3\nbatch_size = 32\neval_batch_size = 500\n")
    row = demo.one_seed(0, tmp_path, ["--config", str(config), "--executor", "local"])
    assert row["final_from"] == "scratch" and row["final_data"] == "train+val" and row["final_val"] is None
    assert row["lineage_batches"] == 12, "from scratch, the best initial gets the final training's batches"
    assert 0.0 <= row["final_test"] <= 1.0 and 0.0 <= row["initial_long_test"] <= 1.0
    assert row["initial_step"] < 3 and row["individuals"] == 6
    text = demo.table([row])
    assert "| 0 |" in text and "it minus the best initial trained the same way" in text
