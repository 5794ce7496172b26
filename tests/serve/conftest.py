"""A tiny trained checkpoint served for real: uvicorn on loopback in a thread, the model thread behind it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import uvicorn

from omniforge.storage import store_from_config
from tests.conftest import free_port


@dataclass
class Served:
    url: str                # ws://127.0.0.1:PORT/v1/realtime
    http: str               # http://127.0.0.1:PORT
    app: object
    answerer: object
    questions: list[np.ndarray]  # user turns of the dataset (16 kHz)


def serve_config(data_store: str, log_dir: str, *extra: str):
    from tests.training_data import tiny_training

    return tiny_training(data_store, log_dir, extra=(
        "train.name=served", "serve.checkpoint=checkpoint/served", "serve.max_conversations=3",
        "serve.max_turn_seconds=6", "serve.max_text_tokens=8", "serve.max_speech_tokens=40", *extra))


@pytest.fixture(scope="session")
def served(data_store, tmp_path_factory) -> Served:
    from omniforge.storage.audio import decode_audio
    from omniforge.tasks.serve.app import create_app, open_answerer
    from omniforge.tasks.train import steps as train_steps

    config = serve_config(data_store, str(tmp_path_factory.mktemp("tb")))
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    train_steps.run_stages_here(config, start, speech, units)
    answerer = open_answerer(store, config)
    app = create_app(answerer, config.serve)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    rows = store.read_table(speech, columns=["role", "audio"]).to_pylist()
    questions = [decode_audio(r["audio"]["bytes"])[0] for r in rows if r["role"] == "user"]
    yield Served(f"ws://127.0.0.1:{port}/v1/realtime", f"http://127.0.0.1:{port}", app, answerer, questions)
    server.should_exit = True
    thread.join(timeout=10)
    answerer.close()
