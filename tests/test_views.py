"""Views derived from a store: TensorBoard event files (read back with TensorBoard's own reader),
the Figure-1 picture and the Parquet export.

The event files must say exactly what the store says, once: a second sync adds nothing, a sync
during a run or after more individuals appear adds exactly the new points.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from evolve.cli.main import app
from evolve.config import build_config
from evolve.runner.launch import open_run, run_in_process
from evolve.store.backend import Store
from evolve.store.keys import individual_key, step_of
from evolve.store.snapshot import Snapshot
from evolve.views.history import RATE_WINDOW
from evolve.views.live import LiveSync
from evolve.views.tensorboard import METRIC_TAGS, SCALAR_TAGS, STATE_FILE, sync
from genomes.words import mutation_words

POPULATION, STEPS = 8, 40
N = POPULATION + STEPS


def _config(path, **kw):
    base = {"store": str(path), "fitness": "synthetic", "population": POPULATION, "steps": STEPS, "workers": 2,
            "refresh_seconds": 0.0, "lease_seconds": 5.0, "seed": 3}
    base.update(kw)
    return build_config(base)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished synthetic run (48 individuals) and its views written in one sync."""
    root = tmp_path_factory.mktemp("views")
    store, config, space = open_run(_config(root / "run"))
    run_in_process(store, config, space)
    report = sync(store, str(root / "tb"), individuals=True)
    return store, root / "tb", report


def _accumulator(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0, "graph": 0})
    acc.Reload()
    return acc


def _scalars(path) -> dict[str, list[tuple[int, float, float]]]:
    acc = _accumulator(path)
    return {tag: [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _files(logdir) -> dict[str, tuple[int, float]]:
    """Every file of a logdir but the cache, with size and mtime."""
    out = {}
    for folder, _, names in os.walk(logdir):
        for name in names:
            path = os.path.join(folder, name)
            if name != STATE_FILE:
                out[os.path.relpath(path, logdir)] = (os.path.getsize(path), os.path.getmtime(path))
    return out


def _f32(x: float) -> float:
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]


def _copy_partial(src: Store, dst_root, steps, deaths_upto: int) -> Store:
    """A store holding run.json, the individuals ``steps`` and the tombstones of kills up to ``deaths_upto``."""
    os.makedirs(dst_root / "individuals", exist_ok=True)
    os.makedirs(dst_root / "deaths", exist_ok=True)
    shutil.copy(os.path.join(src.root, "run.json"), dst_root / "run.json")
    for s in steps:
        target = dst_root / individual_key(s)
        if not target.exists():
            shutil.copy(os.path.join(src.root, individual_key(s)), target)
    for key in src.list_keys("deaths/"):
        if src.read_json(key)["killed_at_step"] <= deaths_upto and not (dst_root / key).exists():
            shutil.copy(os.path.join(src.root, key), dst_root / key)
    return Store.open(str(dst_root))


# -- event files against the store ---------------------------------------------------------------


def test_scalars_match_the_store(finished):
    store, logdir, report = finished
    assert (report.individuals, report.new, report.waiting, report.errors) == (N, N, 0, [])
    scalars = _scalars(logdir / "population")
    assert set(scalars) == set(SCALAR_TAGS)
    snap = Snapshot.read(store)
    # a rate needs the clock (the running maximum of created_at) to have moved over its window:
    # two workers may finish step i before step i - 1
    clock = list(itertools.accumulate((snap.individuals[s]["created_at"] for s in range(N)), max))
    rates = sum(clock[i] > clock[i - min(RATE_WINDOW, i)] for i in range(1, N))
    for tag in SCALAR_TAGS:
        assert len(scalars[tag]) == (rates if tag == "population/steps_per_hour" else N), tag
        assert [s for s, _, _ in scalars[tag]] == sorted(s for s, _, _ in scalars[tag])

    # wall time is the record's created_at; the child's fitness is the record's
    assert [(s, w) for s, w, _ in scalars["population/child_fitness"]] == [
        (s, pytest.approx(snap.individuals[s]["created_at"])) for s in range(N)]
    assert [v for _, _, v in scalars["population/child_fitness"]] == [_f32(snap.individuals[s]["fitness"]) for s in range(N)]
    # replaying births and deaths in step order: the live count and the final population
    live = [v for _, _, v in scalars["population/live"]]
    assert live == [min(s + 1, POPULATION) for s in range(N)]
    final = [snap.individuals[s]["fitness"] for s in snap.live()]
    assert scalars["population/best_fitness"][-1][2] == _f32(max(final))
    assert scalars["population/worst_fitness"][-1][2] == _f32(min(final))
    best_live = snap.best(live_only=True)
    assert scalars["population/best_params"][-1][2] == _f32(best_live["metrics"]["params"])
    assert scalars["population/best_ever_fitness"][-1][2] == _f32(snap.best()["fitness"])
    assert all(v > 0 for _, _, v in scalars["population/steps_per_hour"])


def test_lineage_hparams_and_best_model(finished):
    store, logdir, report = finished
    snap = Snapshot.read(store)
    best = snap.best()
    assert report.best_step == best["step"]

    lineage = _accumulator(logdir / "lineage")
    graph = lineage.Graph()
    nodes = {n.attr["step"].i: n for n in graph.node}
    assert sorted(nodes) == list(range(N))
    names = {s: n.name for s, n in nodes.items()}
    for s, record in snap.individuals.items():
        node = nodes[s]
        assert node.name.startswith("steps_000000-000099/")
        assert list(node.input) == [names[p] for p in record["parents"]]
        assert node.op == (record["mutation"]["name"] if record["mutation"] else "initial")
        assert node.attr["alive"].b == (s not in snap.deaths)
        assert node.attr["fitness"].f == pytest.approx(record["fitness"], abs=1e-6)
    [image] = lineage.Images("lineage/figure1")
    assert image.step == N and image.encoded_image_string[:4] == b"\x89PNG"
    [text] = lineage.Tensors("lineage/ancestry_of_best")
    markdown = text.tensor_proto.string_val[0].decode()
    chain = snap.ancestry(best["step"])
    assert f"step {best['step']}" in markdown
    assert markdown.count("\n| ") == len(chain) + 1  # header + one row per generation

    best_model = _accumulator(logdir / "the_best")
    assert len(best_model.Graph().node) > 3
    assert best_model.Tags()["run_metadata"] == [f"individual_{best['step']}"]

    runs = sorted(os.listdir(logdir / "individuals"))
    assert runs == [f"{s:06d}" for s in range(N)]
    from tensorboard.plugins.hparams import metadata as hp_metadata

    some = snap.individuals[N - 1]
    acc = _accumulator(logdir / "individuals" / f"{N - 1:06d}")
    assert set(acc.Tags()["scalars"]) == {"individual/fitness", "individual/val_accuracy"} | (
        {"individual/train_seconds"} if some["metrics"].get("train_seconds") is not None else set())
    assert set(acc.Tags()["scalars"]) <= set(METRIC_TAGS)
    assert acc.Scalars("individual/fitness")[0].value == _f32(some["fitness"])
    [session] = acc.Tensors(hp_metadata.SESSION_START_INFO_TAG)
    content = acc.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content
    info = hp_metadata.parse_session_start_info_plugin_data(content)
    assert info.hparams["mutation"].string_value == some["mutation"]["name"]
    assert info.hparams["depth"].number_value >= 0 and info.hparams["params"].number_value > 0
    assert info.hparams["change"].string_value == mutation_words(some["mutation"]["name"], some["mutation"]["params"])
    assert session.step == 0


def test_individual_runs_are_opt_in_and_added_for_every_individual_when_turned_on(finished, tmp_path):
    """By default the run list holds population, lineage and the_best alone; --individuals later adds
    one run per individual already shown, and no point elsewhere."""
    store, _, _ = finished
    logdir = tmp_path / "tb"
    report = sync(store, str(logdir))
    assert sorted(p for p in os.listdir(logdir) if not p.startswith(".")) == ["lineage", "population", "the_best"]
    assert report.hparams_runs == 0
    population = _scalars(logdir / "population")
    later = sync(store, str(logdir), individuals=True)
    assert later.hparams_runs == N and later.new == 0
    assert sorted(os.listdir(logdir / "individuals")) == [f"{s:06d}" for s in range(N)]
    assert _scalars(logdir / "population") == population
    assert sync(store, str(logdir), individuals=True).hparams_runs == 0


def test_a_logdir_an_earlier_version_wrote_is_rewritten_under_the_new_names(finished, tmp_path):
    """An earlier evolve named the population files evolve-steps-* (child/*, throughput/* tags), the best's run
    best_model/ and the lineage file evolve-views (mutations as JSON): left there, TensorBoard would show both.
    A sync removes them and writes them again."""
    store, full, _ = finished
    logdir = tmp_path / "tb"
    sync(store, str(logdir))
    for path in (logdir / "population").iterdir():
        path.rename(path.with_name(path.name.replace("evolve-population-", "evolve-steps-")))
    (logdir / "the_best").rename(logdir / "best_model")  # its files were named as they are now
    for path in (logdir / "lineage").iterdir():
        path.rename(path.with_name(path.name.replace("evolve-lineage", "evolve-views")))
    report = sync(store, str(logdir))
    assert report.rebuilt and report.new == N and report.best_model
    assert not (logdir / "best_model").exists()
    assert all("evolve-population-" in p.name for p in (logdir / "population").iterdir())
    assert [p.name for p in (logdir / "lineage").iterdir()] == [f"events.out.tfevents.{N:012d}.evolve-lineage"]
    assert _scalars(logdir / "population") == _scalars(full / "population")


def test_a_second_sync_adds_nothing(finished):
    store, logdir, _ = finished
    before = _files(logdir)
    report = sync(store, str(logdir))
    assert (report.new, report.hparams_runs, report.views, report.best_model, report.rebuilt) == (0, 0, False, False, False)
    assert _files(logdir) == before
    # a lost cache is rebuilt from the store, still without a point more
    os.unlink(logdir / STATE_FILE)
    report = sync(store, str(logdir))
    assert report.rebuilt and report.new == 0 and _files(logdir) == before


def test_growing_store_adds_exactly_the_new_points(finished, tmp_path):
    """A store that grows (with a step in flight and tombstones written ahead of their child) ends
    up with the same event data as one sync of the finished run."""
    store, full_logdir, _ = finished
    grow, logdir = tmp_path / "grow", tmp_path / "tb"
    k = 20
    # steps 0..19 and 21..25 done, 20 still in flight; tombstones up to step 22 (20..22's already written)
    partial = _copy_partial(store, grow, [*range(k), *range(k + 1, k + 6)], deaths_upto=k + 2)
    first = sync(partial, str(logdir), individuals=True)
    assert (first.individuals, first.new, first.waiting) == (k, k, 5)
    assert len(_scalars(logdir / "population")["population/child_fitness"]) == k
    # deaths ahead of their killer are not applied: the population is whole at step 19
    assert _scalars(logdir / "population")["population/live"][-1][2] == POPULATION
    assert len(os.listdir(logdir / "individuals")) == k

    partial = _copy_partial(store, grow, range(k + 1), deaths_upto=k + 10)
    second = sync(partial, str(logdir), individuals=True)
    assert (second.individuals, second.new, second.waiting) == (k + 6, 6, 0)
    assert len(_scalars(logdir / "population")["population/child_fitness"]) == k + 6

    partial = _copy_partial(store, grow, range(N), deaths_upto=N)
    third = sync(partial, str(logdir), individuals=True)
    assert (third.individuals, third.new) == (N, N - k - 6)
    assert sync(partial, str(logdir)).new == 0
    assert _scalars(logdir / "population") == _scalars(full_logdir / "population")
    assert sorted(os.listdir(logdir / "individuals")) == sorted(os.listdir(full_logdir / "individuals"))
    assert len(os.listdir(logdir / "lineage")) == 1 and len(os.listdir(logdir / "the_best")) == 1
    assert _accumulator(logdir / "lineage").Graph() == _accumulator(full_logdir / "lineage").Graph()


def test_sync_during_a_live_run(tmp_path):
    """Syncing over and over while workers write (the `evolve run --logdir` case) never duplicates."""
    store, config, space = open_run(_config(tmp_path / "run", steps=60, synthetic_seconds=0.05))
    logdir = tmp_path / "tb"
    done = threading.Event()
    reports = [sync(store, str(logdir), model_graph=False)]  # writers open before the run

    def keep_syncing():
        while not done.is_set():
            reports.append(sync(store, str(logdir), model_graph=False, views_every=0.2))

    syncer = threading.Thread(target=keep_syncing)
    syncer.start()
    try:
        run_in_process(store, config, space)
    finally:
        done.set()
        syncer.join()
    last = LiveSync(store, str(logdir), model_graph=False).close()  # what `evolve run` calls
    total = POPULATION + 60
    assert last is not None and last.individuals == total
    # the views show the whole run, whether the syncer's last round or close() wrote them
    assert os.listdir(logdir / "lineage") == [f"events.out.tfevents.{total:012d}.evolve-lineage"]
    assert any(0 < r.new < total for r in reports[1:]), f"no sync saw the run half-way: {[r.new for r in reports]}"
    reports.append(last)
    assert sum(r.new for r in reports) == total
    scalars = _scalars(logdir / "population")
    assert [s for s, _, _ in scalars["population/child_fitness"]] == list(range(total))
    assert [v for _, _, v in scalars["population/live"]] == [min(s + 1, POPULATION) for s in range(total)]
    once = tmp_path / "once"
    sync(store, str(once), model_graph=False)
    assert scalars == _scalars(once / "population")


def test_unreadable_record_is_skipped_and_counted(finished, tmp_path):
    store, _, _ = finished
    broken = _copy_partial(store, tmp_path / "broken", range(N), deaths_upto=N)
    bad = 30
    (tmp_path / "broken" / individual_key(bad)).write_text("{not json")
    report = sync(broken, str(tmp_path / "tb"), individuals=True)
    assert report.individuals == N and [step_of(k) for k, _ in report.unreadable] == [bad]
    assert report.hparams_runs == N - 1
    scalars = _scalars(tmp_path / "tb" / "population")
    assert len(scalars["population/live"]) == N and len(scalars["population/child_fitness"]) == N - 1
    assert not (tmp_path / "tb" / "individuals" / f"{bad:06d}").exists()
    again = sync(broken, str(tmp_path / "tb"), individuals=True)  # not read, nor warned about, every sync
    assert (again.unreadable, again.hparams_runs) == ([], 0)


def test_logdir_of_another_run_is_refused(finished, tmp_path):
    _, logdir, _ = finished
    other, config, space = open_run(_config(tmp_path / "other", steps=2))
    run_in_process(other, config, space)
    result = CliRunner().invoke(app, ["tensorboard", other.url, "--logdir", str(logdir)])
    assert result.exit_code == 2
    assert "another run" in result.output


def test_cli_tensorboard_is_idempotent(finished, tmp_path):
    store, _, _ = finished
    runner = CliRunner()
    args = ["tensorboard", store.url, "--logdir", str(tmp_path / "tb"), "--no-model-graph"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"{N} individuals (+{N})" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and f"{N} individuals (+0)" in second.output
    assert not (tmp_path / "tb" / "individuals").exists() and not (tmp_path / "tb" / "the_best").exists()


# -- the picture and the table ------------------------------------------------------------------


def test_plot_writes_a_png(finished, tmp_path):
    from PIL import Image

    store, _, _ = finished
    out = tmp_path / "run.png"
    result = CliRunner().invoke(app, ["plot", store.url, str(out), "--width", "8", "--height", "5", "--dpi", "100"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 500)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20  # dots, a line and a legend, not a blank canvas


def test_export_parquet(finished, tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evolve.views.parquet import schema

    store, _, _ = finished
    out = tmp_path / "run.parquet"
    result = CliRunner().invoke(app, ["export", store.url, str(out)])
    assert result.exit_code == 0, result.output
    snap = Snapshot.read(store)

    table = pq.read_table(out)
    genes = [f for f in table.schema.names if f.startswith("hp_")]
    assert genes == ["hp_learning_rate"]  # a DNA's learning rate is its gene: a column beside the fixed schema
    fixed = pa.schema([table.schema.field(n) for n in table.schema.names if not n.startswith("hp_")])
    assert fixed.remove_metadata().equals(schema().remove_metadata(), check_metadata=False)
    assert all(v > 0 for v in table.column("hp_learning_rate").to_pylist())
    assert table.num_rows == N
    assert table.schema.field("parents").type == pa.list_(pa.int64())
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert json.loads(table.schema.metadata[b"evolve.run"])["config"]["population"] == POPULATION
    rows = table.to_pylist()
    assert [r["step"] for r in rows] == list(range(N))
    for r in rows:
        record = snap.individuals[r["step"]]
        assert r["parents"] == record["parents"]
        assert r["parent"] == (record["parents"][0] if record["parents"] else None)
        assert r["fitness"] == record["fitness"] and r["hash"] == record["hash"]
        assert r["alive"] == (r["step"] not in snap.deaths)
        assert r["killed_at_step"] == (snap.deaths[r["step"]]["killed_at_step"] if not r["alive"] else None)
        assert json.loads(r["genome"]) == record["genome"]
        assert r["mutation"] == (record["mutation"]["name"] if record["mutation"] else None)
        assert r["created_at"].timestamp() == pytest.approx(record["created_at"], abs=1e-5)

    frame = pd.read_parquet(out)
    assert len(frame) == N and int(frame["alive"].sum()) == POPULATION
    assert frame["genome_summary"].str.startswith("dna:").all()
    assert str(frame["created_at"].dtype).startswith("datetime64")


def test_export_reads_in_duckdb_and_polars(finished, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    polars = pytest.importorskip("polars")
    from evolve.views.parquet import export_parquet

    store, _, _ = finished
    out = str(tmp_path / "run.parquet")
    export_parquet(store, out)
    with duckdb.connect() as db:
        assert db.execute(f"select count(*), sum(alive::int) from '{out}'").fetchall() == [(N, POPULATION)]
    assert polars.read_parquet(out).height == N


# -- a real TensorBoard -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return raw if response.headers.get_content_type().startswith("image/") else json.loads(raw)


@pytest.mark.slow
def test_tensorboard_serves_the_views(finished):
    from evolve.views.live import tensorboard_command

    store, logdir, _ = finished
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(tensorboard_command(str(logdir), port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        tags: dict = {}
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            try:
                tags = _get(f"{base}/data/plugin/scalars/tags")
                if "population" in tags and len([r for r in tags if r.startswith("individuals/")]) == N:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert set(tags.get("population", {})) == set(SCALAR_TAGS)

        points = _get(f"{base}/data/plugin/scalars/scalars?run=population&tag=population/live")
        assert [p[1] for p in points] == list(range(N)) and points[-1][2] == POPULATION

        experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"mutation", "depth", "params", "learning_rate", "origin"} <= hparams
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert "individual/fitness" in metrics
        groups = _get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                      "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "individual/fitness", "group": ""}, "order": "ORDER_DESC"}],
            "startIndex": 0, "sliceSize": N})
        assert groups["totalSize"] == N
        snap = Snapshot.read(store)
        assert groups["sessionGroups"][0]["name"] == f"{snap.best()['step']:06d}"

        images = _get(f"{base}/data/plugin/images/tags")
        assert "lineage/figure1" in images["lineage"]
        [entry] = _get(f"{base}/data/plugin/images/images?run=lineage&tag=lineage/figure1")
        assert entry["step"] == N
        png = _get(f"{base}/data/plugin/images/individualImage?{entry['query']}")
        assert png[:4] == b"\x89PNG"
        graphs = _get(f"{base}/data/plugin/graphs/info")
        assert graphs["lineage"]["run_graph"] and graphs["the_best"]["run_graph"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_views_and_export_show_the_bests_kept_test_accuracy_and_final_model(finished, tmp_path):
    """A child's record carries no test accuracy; the views and the export take the best's from results/."""
    from evolve.store.keys import record_key_of_final, record_key_of_tested

    store, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    store = Store.open(str(copy))
    best = Snapshot.read(store).best()
    store.create_json(record_key_of_tested(best["step"]), {"step": best["step"], "test_accuracy": 0.9731})
    store.create_json(record_key_of_final(best["step"]), {"step": best["step"], "status": "ok", "batches": 4000,
                                                          "val_accuracy": 0.99, "test_accuracy": 0.9876})
    sync(store, str(tmp_path / "tb"))
    [text] = _accumulator(tmp_path / "tb" / "lineage").Tensors("lineage/ancestry_of_best")
    ancestry = text.tensor_proto.string_val[0].decode()
    [text] = _accumulator(tmp_path / "tb" / "the_best").Tensors("the_best/genome")
    genome = text.tensor_proto.string_val[0].decode()
    for markdown in (ancestry, genome):
        assert "test 97.31%" in markdown
        assert "final model (the best trained from its weights, 4,000 batches on train): validation 99.00%, " \
               "test 98.76%" in markdown
    import pyarrow.parquet as pq

    from evolve.views.parquet import export_parquet

    export_parquet(store, tmp_path / "run.parquet")
    table = pq.read_table(tmp_path / "run.parquet").to_pydict()
    tests = dict(zip(table["step"], table["test_accuracy"]))
    assert tests[best["step"]] == 0.9731 and sum(t is not None for t in tests.values()) == 1


def test_replay_counts_a_loser_killed_before_its_own_step_is_replayed():
    """Claims land out of order, so step 5 may kill individual 6 (finished earlier in time): replayed in
    step order, 6 is born dead, and the live count and ranking never include it."""
    from evolve.store.records import Individual
    from evolve.views.history import Replay, Row

    def record(step: int, fitness: float, parents=()):
        return Row.of(Individual(step=step, created_at=float(step), fitness=fitness, parents=list(parents),
                                 status="ok", metrics={"params": 10}, genome={"kind": "dna"}))

    replay = Replay()
    for s in range(4):
        replay.birth(record(s, 0.1 * s))
    replay.birth(record(4, 0.2, [1]))
    replay.death(0)
    replay.birth(record(5, 0.35, [2]))
    replay.death(6)  # step 5's loser is individual 6
    assert replay.scalars()["population/live"] == 4
    replay.birth(record(6, 0.9, [3]))
    replay.death(1)  # step 6's own loser
    assert sorted(replay.live) == [2, 3, 4, 5]
    assert replay.best_live() == 5 and replay.best().step == 6  # it lived: the best ever, not live


@given(st.lists(st.one_of(st.none(), st.sampled_from([0.1, 0.5, 0.9])), max_size=30))
def test_the_replay_and_every_reader_follow_one_best_rule(fitnesses):
    """Highest fitness, and of equals the earliest step: the replay's running best agrees with best_step."""
    from dataclasses import replace

    from evolve.store.snapshot import best_step
    from evolve.views.history import Replay, Row

    replay = Replay()
    for step, f in enumerate(fitnesses):
        replay.birth(replace(Row.unreadable(step, float(step)), status="ok", origin="mutation", fitness=f))
    scored = [s for s, f in enumerate(fitnesses) if f is not None]
    expected = max(scored, key=lambda s: (fitnesses[s], -s)) if scored else None  # the rule, written out
    assert best_step(enumerate(fitnesses)) == expected
    assert getattr(replay.best(), "step", None) == expected


def test_the_ancestry_walk_stops_at_a_missing_parent_or_a_cycle():
    from evolve.store.snapshot import ancestry

    parents = {5: 3, 3: 1, 1: None}
    assert ancestry(5, lambda s: (s, parents[s]) if s in parents else None) == [1, 3, 5]
    assert ancestry(5, lambda s: (s, {5: 3, 3: 9}.get(s)) if s in (5, 3) else None) == [3, 5]
    assert ancestry(5, lambda s: (s, {5: 3, 3: 5}[s])) == [3, 5]
