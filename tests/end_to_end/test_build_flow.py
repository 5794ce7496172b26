"""End to end: the build flow killed mid-synthesis resumes to the same dataset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from omniforge.flows.build_dialogues import build_dialogues
from omniforge.storage import store_from_config
from omniforge.tasks.build.steps import load_and_plan
from tests.build.test_build_dialogues import SMALL, config_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_killed_build_resumes_to_the_same_dataset(tmp_path):
    overrides = ["build.source.demo.dialogues=10", "build.synthesis.batch_size=1", "build.synthesis.checkpoint_every=2"]
    killed = config_for(tmp_path, *overrides, store="killed")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-child")}
    args = [sys.executable, "-m", "omniforge.cli", "build-dialogues", "-c", "configs/demo.yaml",
            *[f"--set={o}" for o in SMALL + overrides + [f"store.url={tmp_path / 'killed'}"]]]
    child = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = tmp_path / "killed" / "cache" / "tts"
    deadline = time.time() + 240
    while time.time() < deadline and not list(cache.glob("*.parquet")) and child.poll() is None:
        time.sleep(0.2)
    assert child.poll() is None, "the build finished before it could be killed"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    store = store_from_config(killed.store)
    assert store.versions("speech", "demo") == []  # nothing half-published

    total = len(list(load_and_plan(killed).jobs()))
    resumed = build_dialogues(killed)
    assert 0 < resumed["synthesized_this_run"] < total  # finished work was kept, not redone
    uninterrupted = build_dialogues(config_for(tmp_path, *overrides, store="clean"))
    assert uninterrupted["synthesized_this_run"] == total
    assert resumed["content_hash"] == uninterrupted["content_hash"]
