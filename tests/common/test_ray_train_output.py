"""What a user reads while Ray Train runs in a local session: each progress line once, and none of Ray's
own bookkeeping repeated every second."""

from __future__ import annotations

import tempfile
import time

from omniforge.config import RayConfig
from omniforge.tasks.common.ray_runtime import ray_session

STEPS = 6


def print_progress(config: dict) -> None:
    """A training loop's shape: a progress line a second."""
    for step in range(config["steps"]):
        print(f"progress line {step}", flush=True)
        time.sleep(1)


def test_a_local_ray_train_run_prints_each_progress_line_once_and_no_ray_noise(capfd):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    shown = ""
    with ray_session(RayConfig(num_cpus=2), log_to_driver=True), tempfile.TemporaryDirectory() as storage:
        TorchTrainer(print_progress, train_loop_config={"steps": STEPS}, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(name="progress", storage_path=storage)).fit()
        deadline = time.monotonic() + 15
        while f"progress line {STEPS - 1}" not in shown and time.monotonic() < deadline:  # the log monitor's delay
            time.sleep(0.5)
            captured = capfd.readouterr()
            shown += captured.out + captured.err
    captured = capfd.readouterr()
    shown += captured.out + captured.err
    assert [shown.count(f"progress line {step}") for step in range(STEPS)] == [1] * STEPS
    # the cleaner asks the dashboard's State API, which a local session does not start, every second
    assert "Failed to query Ray Train Controller" not in shown
    assert "Reporting training result" not in shown
