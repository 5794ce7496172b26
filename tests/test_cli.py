"""The CLI's error boundary: a person's mistake ends in at most two lines naming what to fix, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def omniforge(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omniforge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_clear_failure(done: subprocess.CompletedProcess, *needles: str) -> None:
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert 1 <= len(output) <= 2 and "Traceback" not in done.stderr, output
    for needle in needles:
        assert needle in "\n".join(output)


def test_a_missing_input_file(tmp_path):
    done = omniforge("build-dialogues", "--set", f"store.url={tmp_path / 'store'}", "--set", "build.source.kind=jsonl",
                     "--set", f"build.source.path={tmp_path / 'nope.jsonl'}")
    assert_clear_failure(done, "error: ", "build.source.path", str(tmp_path / "nope.jsonl"))
    assert not (tmp_path / "store").exists()  # nothing started


@pytest.mark.parametrize("command", [["artifacts", "list", "--store", "nosuch://bucket/store"],
                                     ["run", "--set", "store.url=nosuch://bucket/store"]])
def test_a_bad_store_url(command):
    assert_clear_failure(omniforge(*command), "error: cannot open the store nosuch://bucket/store")


def test_a_missing_wav_in_the_eval_set(tmp_path):
    items = [{"id": "q1", "conversation": [{"from": "human", "text": "Hi?", "speech": "wav/q1.wav"}]}]
    (tmp_path / "questions.json").write_text(json.dumps(items))
    done = omniforge("evaluate", "--eval-set", str(tmp_path / "questions.json"), "--set", f"store.url={tmp_path / 's'}",
                     cwd=tmp_path)
    assert_clear_failure(done, "no usable item", "item 'q1'", "wav/q1.wav not found (tried ")


def test_a_config_mistake(tmp_path):
    assert_clear_failure(omniforge("config", "show", "--set", "train.s2t.steps=-3"), "train.s2t.steps")
