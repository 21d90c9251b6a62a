"""bench/nasbench.py in its smoke mode, and its reference loops checked against the table.

The smoke figures mean nothing; what is checked is that the real engine's runs are counted right
(best so far, budgets, pairing with random sampling) and that local search follows White et al.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import nasbench
from evolve.config import TableSpec
from evolve.training.tabular import load_table
from genomes import SearchSpace
from genomes.nb201.genome import NB201


def test_the_smoke_run_reports_every_strategy_at_every_budget(tmp_path, capsys):
    out, png = tmp_path / "nasbench.json", tmp_path / "nasbench.png"
    assert nasbench.main(["--smoke", "--json", str(out), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert not result["bad_stores"] and png.stat().st_size > 0
    rows = {(r["strategy"], r["workers"], r["budget"]): r for r in result["rows"]}
    for strategy in [*nasbench.ENGINE, nasbench.LOCAL]:
        for workers in (["1", "2"] if strategy != nasbench.LOCAL else ["serial"]):
            for budget in (24, 30):
                row = rows[(strategy, workers, budget)]
                assert row["runs"] == 3 and row["mean"] <= result["optimum"] + 1e-9
                assert ("vs_random" in row) == (strategy != "random")
    for key, curves in result["curves"].items():
        assert all(len(c) == 30 and c == sorted(c) for c in curves), key  # best so far never falls
    assert "| tournament | 2 | 30 |" in text and "every store passed check_store: yes" in text


def test_the_paired_difference_is_against_random_at_the_same_seed():
    curves = {("random", "1"): [[1.0, 2.0], [1.0, 3.0]], ("aging-20-5", "1"): [[1.5, 2.5], [1.0, 4.0]]}
    rows = {(r["strategy"], r["budget"]): r for r in
            nasbench.summarise(curves, [2], 5.0, lambda w: ("random", w))}
    assert rows[("aging-20-5", 2)]["vs_random"] == 0.75  # (0.5 + 1.0) / 2
    assert rows[("aging-20-5", 2)]["regret"] == 5.0 - 3.25 and "vs_random" not in rows[("random", 2)]


def test_local_search_climbs_one_edge_at_a_time_and_counts_each_cell_once():
    table, space = load_table(TableSpec("nb201-cifar10"), "nb201"), SearchSpace(max_params=2_000_000)
    curve = nasbench.local_search(3, 200, table, space)
    assert len(curve) == 200 and curve == sorted(curve)
    # after its 10 random starts it evaluates their best's 24 neighbours: the 11th to 34th evaluations
    rng = random.Random(3)
    starts = [NB201.sample(rng, space) for _ in range(nasbench.LOCAL_START)]
    best = max(table.values[g.to_string()] for g in starts)
    assert curve[9] == best and curve[33] >= best
