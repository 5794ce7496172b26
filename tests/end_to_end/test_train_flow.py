"""End to end on Ray Train with two workers: FSDP and DDP (through the train flow) against one worker,
sharded checkpoints resumed on another worker count, and a worker killed mid-stage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from omniforge.storage import store_from_config
from omniforge.tasks.train import steps as train_steps
from omniforge.tasks.train.checkpoints import load_checkpoint
from tests.training_data import tiny_training

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _kill_one_worker_once(store_root: Path, after_versions: int, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL one Ray Train worker process once `after_versions` checkpoint versions exist: one of this test's
    (its local Ray runs under this process), never another test's."""
    while not stop.is_set():
        if store_root.is_dir() and len([d for d in store_root.iterdir() if d.name.startswith("v")]) >= after_versions:
            for process in psutil.Process().children(recursive=True):
                try:
                    command = " ".join(process.cmdline())
                except psutil.Error:  # gone meanwhile
                    continue
                if "RayTrainWorker" in command:
                    process.kill()
                    killed.append(process.pid)
                    return
        time.sleep(0.05)


def _config(data_store: str, tmp_path: Path, name: str, workers: int, strategy: str = "fsdp", init: str | None = None,
            loss_chunk: int = 0):
    """s2t through LoRA adapters (frozen base LLM), then tts training its whole TTS LM; one step is 2
    micro-batches of 2 dialogues, split over the workers (2 x 1) or accumulated by one (1 x 2)."""
    accum = 2 // workers
    return tiny_training(data_store, str(tmp_path / "tb"), name=name, steps=4, extra=(
        f"train.workers={workers}", f"train.strategy={strategy}", "train.stages=[s2t,tts]", "train.tts.steps=6",
        "train.s2t.lora={rank: 4, alpha: 8}", f"train.s2t.grad_accum={accum}", f"train.tts.grad_accum={accum}",
        "train.checkpoint_every=2", f"train.loss_chunk_tokens={loss_chunk}",
        *((f"train.init_from={init}",) if init else ())))


def _train(config, here: bool = False) -> None:
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    (train_steps.run_stages_here if here else train_steps.run_stages)(config, start, speech, units, None)


RESUMED = [("s2t", 2), ("s2t", 4), ("tts", 2), ("tts", 4), ("tts", 6)]


def _versions(store, name: str) -> list:
    """The manifests of checkpoint/NAME, in version order."""
    return [store.manifest(f"checkpoint/{name}@{v}") for v in store.versions("checkpoint", name)]


def _steps(store, name: str) -> list[tuple[str, int]]:
    return [(m.stats["stage"], m.stats["step"]) for m in _versions(store, name)]


def _losses(store, name: str) -> dict[tuple[str, int], float]:
    return {(m.stats["stage"], m.stats["step"]): m.stats["metrics"]["loss"] for m in _versions(store, name)
            if m.stats["step"]}


def _weights(store, name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(store, store.latest_manifest("checkpoint", name))[0].state_dict()


def _close(a: dict, b: dict, tolerance: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=tolerance) if isinstance(a[k], torch.Tensor)
                                        else abs(a[k] - b[k]) <= tolerance for k in a)


def _copy(store, manifest, name: str) -> None:
    """Publish `manifest` (an unfinished stage) under `name` too: a run of `name` resumes from it."""
    copy = manifest.model_copy(deep=True)
    copy.name = name
    store.publish(copy)


def test_fsdp_trains_as_ddp_and_one_worker_and_resumes_on_any_worker_count(data_store, tmp_path):
    """FSDP and DDP on two Ray Train workers, their losses in chunks of 3 labelled positions, give one
    worker's losses and weights, its loss in one piece (same global batches); a stage saved by 2
    workers resumes on 1, one saved by 1 resumes on 2, and a worker SIGKILLed mid-stage is started
    again and the stage resumes from its sharded checkpoint."""
    from omniforge.flows.train import train

    store = store_from_config(_config(data_store, tmp_path, "one", 1).store)
    _train(_config(data_store, tmp_path, "one", 1), here=True)
    init = "checkpoint/one@1"  # every run starts from the same fresh model: the same stage keys
    _train(_config(data_store, tmp_path, "fsdp", 2, init=init, loss_chunk=3))
    ddp = _config(data_store, tmp_path, "ddp", 2, "ddp", init=init, loss_chunk=3)
    result = train(ddp)  # DDP through the train flow: a Prefect run launching Ray Train
    assert set(result["stages"]) == {"s2t", "tts"} and store.manifest(result["checkpoint"]).flow_run_id is not None
    versions = store.versions("checkpoint", "ddp")
    assert train(ddp)["checkpoint"] == result["checkpoint"]  # every stage done: skipped, no Ray launch
    assert store.versions("checkpoint", "ddp") == versions
    one = _losses(store, "one")
    assert len(one) == 5  # s2t steps 2 and 4, tts 2, 4 and 6
    assert _close(_losses(store, "fsdp"), one, 1e-4) and _close(_losses(store, "ddp"), one, 1e-4)
    assert _close(_weights(store, "fsdp"), _weights(store, "one"), 1e-4)
    saved_by = {name: next(m for m in _versions(store, name) if m.stats["step"] == 2) for name in ("one", "fsdp")}
    assert len([f for f in saved_by["fsdp"].files if f.endswith(".distcp")]) == 2  # a shard file per worker

    _copy(store, saved_by["fsdp"], "on-one")  # s2t at step 2, saved by two FSDP workers: resumed by one
    _train(_config(data_store, tmp_path, "on-one", 1, init=init), here=True)
    assert _steps(store, "on-one") == RESUMED  # the copied step 2, then the rest: resumed, not started over
    assert _close(_losses(store, "on-one"), one, 1e-4)

    _copy(store, saved_by["one"], "on-two")  # saved by one worker: resumed by two, one of them killed in tts
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_one_worker_once,
                               args=(Path(data_store) / "checkpoint" / "on-two", 3, killed, stop))
    watcher.start()
    try:
        _train(_config(data_store, tmp_path, "on-two", 2, init=init))
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed"
    assert _steps(store, "on-two") == RESUMED  # no step saved twice
    assert _close(_weights(store, "on-two"), _weights(store, "one"), 1e-4)
