"""The run's dataset is built from its config in one place, ``storage_options`` included: a dataset in a
bucket reachable only with the options given to the run trains its children on the workers, in-process and
on Ray, and the final model trains on it too."""

from __future__ import annotations

import math
import uuid

import pytest
from test_data import image_table, images, labels, parquet_bytes
from test_store import moto_endpoint, s3_options  # noqa: F401 - the session's moto server (a fixture)

from evolve.config import build_config
from evolve.runner.launch import open_run, run_in_process, run_on_ray
from evolve.store.snapshot import Snapshot
from evolve.training.datasets import run_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private_dataset(moto_endpoint):  # noqa: F811 - the fixture
    """A Parquet image table in a moto bucket: s3fs finds it only through the endpoint in the options."""
    endpoint, client = moto_endpoint
    bucket = f"evolve-data-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    options = s3_options(endpoint)
    x, y = images(60, 1, 12, 12, seed=3), labels(60, 3, seed=3)
    x_test, y_test = images(15, 1, 12, 12, seed=4), labels(15, 3, seed=4)
    write_files_with = {"data/train-00000-of-00001.parquet": parquet_bytes(image_table(x, y, "png")),
                        "data/test-00000-of-00001.parquet": parquet_bytes(image_table(x_test, y_test, "png"))}
    import fsspec

    fs = fsspec.filesystem("s3", **options)
    for name, data in write_files_with.items():
        with fs.open(f"{bucket}/{name}", "wb") as f:
            f.write(data)
    return f"parquet:s3://{bucket}/data", bucket, options


def _config(dataset: str, store: str, options: dict, **kw):
    return build_config({"store": store, "storage_options": options, "dataset": dataset, "population": 2,
                         "steps": 2, "workers": 1, "final_batches": 0, "refresh_seconds": 0.0,
                         "train": {"batches": 2, "batch_size": 16, "eval_batch_size": 64}, **kw})


def _assert_children_trained(store, config) -> None:
    records = Snapshot.read(store).individuals
    assert len(records) == config.population + config.steps
    for record in records.values():
        assert record["status"] == "ok", record.get("reason")
        assert math.isfinite(record["fitness"]) and record["metrics"]["batches"] == 2, record["metrics"]


def test_the_helper_passes_the_options(private_dataset):
    dataset, _, options = private_dataset
    data = run_dataset(_config(dataset, "runs/unused", options))
    assert data.num_classes == 3 and tuple(data.input_shape) == (1, 12, 12)
    assert sum(data.sizes().values()) == 75


def test_a_private_bucket_dataset_trains_children_in_process(private_dataset, tmp_path):
    dataset, bucket, options = private_dataset
    store, config, space = open_run(_config(dataset, f"s3://{bucket}/run-local", options))
    assert space.input_shape == (1, 12, 12) and space.num_classes == 3
    run_in_process(store, config, space)
    _assert_children_trained(store, config)


def test_a_private_bucket_dataset_trains_children_on_ray(private_dataset):
    ray = pytest.importorskip("ray")
    dataset, bucket, options = private_dataset
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        store, config, space = open_run(_config(dataset, f"s3://{bucket}/run-ray", options, workers=2,
                                                cpus_per_worker=0.5))
        results = run_on_ray(store, config, space)
    finally:
        ray.shutdown()
    assert sum(r["steps"] for r in results) == config.population + config.steps
    _assert_children_trained(store, config)
    assert {r["worker"].split("-")[0] for r in Snapshot.read(store).individuals.values()} == {"ray"}
