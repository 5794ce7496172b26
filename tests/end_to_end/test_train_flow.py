"""End to end: the train flow on Ray Train with two workers."""

from __future__ import annotations

import numpy as np
import pytest

from omniforge.storage import store_from_config
from tests.training_data import tiny_training

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_train_flow_on_ray_train_with_two_workers(data_store, tmp_path):
    from omniforge.flows.train import train

    config = tiny_training(data_store, str(tmp_path / "tb"), name="ray2", extra=("train.workers=2",))
    result = train(config)
    store = store_from_config(config.store)
    final = store.manifest(result["checkpoint"])
    assert final.stats["stage"] == "s2s" and final.stats["complete"]
    assert set(result["stages"]) == {"s2t", "tts", "s2s"}
    assert all(np.isfinite(result["stages"][s]["loss"]) for s in result["stages"])
    assert final.flow_run_id is not None
    versions = store.versions("checkpoint", "ray2")
    assert train(config)["checkpoint"] == result["checkpoint"]  # every stage done: skipped, no Ray launch
    assert store.versions("checkpoint", "ray2") == versions
