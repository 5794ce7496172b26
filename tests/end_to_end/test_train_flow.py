"""End to end: the train flow on Ray Train with two workers, and a worker killed mid-stage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from omniforge.storage import store_from_config
from omniforge.tasks.train import steps as train_steps
from omniforge.tasks.train.checkpoints import load_checkpoint
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


def _kill_one_worker_once(store_root: Path, after_versions: int, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL one Ray Train worker process once `after_versions` checkpoint versions exist."""
    while not stop.is_set():
        if store_root.is_dir() and len([d for d in store_root.iterdir() if d.name.startswith("v")]) >= after_versions:
            for process in psutil.process_iter(["cmdline"]):
                if "RayTrainWorker" in " ".join(process.info["cmdline"] or []):
                    process.kill()
                    killed.append(process.pid)
                    return
        time.sleep(0.05)


def test_a_killed_worker_is_started_again_and_the_stage_resumes(data_store, tmp_path):
    """Two DDP workers; one is SIGKILLed after the stage's second checkpoint: Ray Train starts the group
    again, the stage resumes from its last checkpoint and ends with the uninterrupted run's weights."""
    runs = {}
    for name in ("straight", "killed"):
        config = tiny_training(data_store, str(tmp_path / "tb"), name=name, steps=6,
                               extra=("train.workers=2", "train.stages=[s2t]"))
        store = store_from_config(config.store)
        speech, units = train_steps.resolve_inputs(store, config)
        start = train_steps.initial_checkpoint(store, config, speech, units, None)
        killed, stop = [], threading.Event()
        watcher = threading.Thread(target=_kill_one_worker_once,
                                   args=(Path(data_store) / "checkpoint" / name, 3, killed, stop))
        if name == "killed":
            watcher.start()
        train_steps.run_stages(config, start, speech, units, None)
        stop.set()
        if name == "killed":
            watcher.join()
            assert killed, "no worker was killed"
        runs[name] = store.latest_manifest("checkpoint", name)
    straight, resumed = runs["straight"], runs["killed"]
    assert resumed.stats["complete"] and resumed.stats["step"] == 6
    steps = [store.manifest(f"checkpoint/killed@{v}").stats["step"] for v in store.versions("checkpoint", "killed")]
    assert steps == sorted(steps)  # resumed from a checkpoint, not started over (no step saved twice)
    assert len(steps) == len(set(steps))
    a = load_checkpoint(store, straight)[0].state_dict()
    b = load_checkpoint(store, resumed)[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
