"""A tiny trained checkpoint served for real: `omniforge serve` in its own process on loopback.
The tests compare its answers with the same checkpoint answering here, offline."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from omniforge.storage import store_from_config
from tests.conftest import free_port


@dataclass
class Served:
    url: str                # ws://127.0.0.1:PORT/v1/realtime
    http: str               # http://127.0.0.1:PORT
    engine: object          # the same checkpoint and decoder, answering in this process
    questions: list[np.ndarray]  # user turns of the dataset (16 kHz)

    def status(self) -> dict:
        return httpx.get(f"{self.http}/status", timeout=10).json()


# The history test needs a model whose speech changes with the conversation's history, which only its
# LLM's states carry: so this model, trained for a few steps, has its gate fusion start half open (torch's
# default) and its TTS LM read clean units (with noised ones, so briefly trained, it repeats one unit).
SERVE = ["train.name=served", "serve.checkpoint=checkpoint/served", "serve.max_conversations=3",
         "serve.max_turn_seconds=6", "serve.max_text_tokens=8", "serve.max_speech_tokens=40",
         "train.model.gate_init_bias=null", "train.augment.unit_noise=0"]


@pytest.fixture(scope="session")
def served(data_store, tmp_path_factory) -> Served:
    from omniforge.storage.audio import decode_audio
    from omniforge.tasks.serve.app import open_served_engine
    from omniforge.tasks.train import steps as train_steps
    from tests.training_data import TINY_DECODER, tiny_training

    config = tiny_training(data_store, str(tmp_path_factory.mktemp("tb")), extra=tuple(SERVE))
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    train_steps.run_stages_here(config, start, speech, units)
    engine = open_served_engine(store, config)  # what the server runs, answering here
    rows = store.read_table(speech, columns=["role", "audio"]).to_pylist()
    questions = [decode_audio(r["audio"]["bytes"])[0] for r in rows if r["role"] == "user"]

    port, log = free_port(), tmp_path_factory.mktemp("serve") / "server.log"
    overrides = [f"store.url={data_store}", "units.kmeans.k=32", *TINY_DECODER, *SERVE]
    server = subprocess.Popen([sys.executable, "-m", "omniforge.cli", "serve", "--config", "configs/demo.yaml",
                               "--port", str(port)]
                              + [arg for o in overrides for arg in ("--set", o)],
                              stdout=subprocess.DEVNULL, stderr=log.open("w"))
    http = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            httpx.get(f"{http}/status", timeout=2).raise_for_status()
            break
        except httpx.HTTPError:
            assert server.poll() is None, log.read_text()
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.3)
    yield Served(f"ws://127.0.0.1:{port}/v1/realtime", http, engine, questions)
    server.terminate()
    server.wait(timeout=30)
