"""cluster.yaml is checked by Ray's own launcher validation, not by eye."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_ray_validation():
    config = yaml.safe_load(CLUSTER.read_text())
    prepared = prepare_config(config)  # fills in the provider's defaults, as `ray up` does
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"
    assert prepared["available_node_types"]["gpu_worker"]["max_workers"] <= prepared["max_workers"]
    assert any("pip install" in c and "evolve" in c for c in prepared["setup_commands"])


def test_validation_would_catch_a_broken_file():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_workers"] = "many"
    with pytest.raises(Exception, match="min_workers|many"):
        validate_config(prepare_config(config))
