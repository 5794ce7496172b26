"""Many conversations, one batch: a thread runs the model for every answer in progress.

A committed user turn becomes a request; at the next step boundary its prompt is encoded and
prefilled and it joins the running `StreamingBatch`. Each step's text tokens and unit chunks go
to their answer's listener, the units through that answer's own decoder session (so audio leaves
as soon as it is exact). An answer leaves the batch when its text and speech have ended, or at
once when its listener goes away.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from omniforge.model.streaming import GenerationSettings, StreamingBatch
from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
from omniforge.tasks.units.decoder import AudioSession

log = logging.getLogger(__name__)


@dataclass
class AnswerEvent:
    kind: str                # "text" (delta), "audio" (samples), "done", "error"
    seconds: float           # since the user's turn was committed
    text: str = ""
    audio: np.ndarray | None = None
    first_audio: float | None = None  # with "done": when the answer's first audio left


@dataclass
class AnswerRequest:
    key: str
    history: list[tuple[str, str]]  # (role, text), ending with the user's turn
    speech: list[np.ndarray]        # every user turn's 16 kHz wave, in order
    listener: Callable[[AnswerEvent], None]  # called from the model thread
    committed: float = field(default_factory=time.perf_counter)


@dataclass
class _Running:
    request: AnswerRequest
    session: AudioSession
    text_ids: list[int] = field(default_factory=list)
    text: str = ""
    first_audio: float | None = None

    def emit(self, kind: str, **payload) -> None:
        seconds = time.perf_counter() - self.request.committed
        if kind == "audio" and self.first_audio is None:
            self.first_audio = seconds
        self.request.listener(AnswerEvent(kind, seconds, **payload))


class BatchedAnswerer:
    """The model thread. `submit` and `cancel` may be called from any thread."""

    def __init__(self, engine: StreamingEngine, settings: GenerationSettings, torch_threads: int = 1,
                 generator: torch.Generator | None = None, admit_window_s: float = 0.0) -> None:
        self.engine, self.settings, self.torch_threads, self.generator = engine, settings, torch_threads, generator
        self.admit_window_s = admit_window_s
        self.inbox: queue.Queue[AnswerRequest | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()
        self.batch = StreamingBatch(engine.model, settings, generator)
        self.running: dict[str, _Running] = {}
        self.steps = 0  # batch steps taken (for /status and load tests)
        self.largest_batch = 0
        self._stop = False
        self.thread = threading.Thread(target=self._loop, name="omniforge-answerer", daemon=True)
        self.thread.start()

    def submit(self, request: AnswerRequest) -> None:
        self.inbox.put(request)

    def cancel(self, key: str) -> None:
        with self.lock:
            self.cancelled.add(key)
        self.inbox.put(None)  # wake the thread if it waits

    def close(self) -> None:
        self._stop = True
        self.inbox.put(None)

    def _loop(self) -> None:
        torch.set_num_threads(self.torch_threads)
        while not self._stop:
            try:
                self._admit(block=not self.running)
                self._drop_cancelled()
                if self.running:
                    self._step()
            except Exception as err:  # noqa: BLE001 - a bug fails the answers in flight, not the server
                log.exception("the model thread's step failed")
                for running in list(self.running.values()):
                    running.emit("error", text=f"{type(err).__name__}: {err}")
                self.running.clear()
                self.batch = StreamingBatch(self.engine.model, self.settings, self.generator)

    def _admit(self, block: bool) -> None:
        """Every request waiting now joins the batch (one prefill for them all). An idle server
        waits `admit_window_s` after the first for others arriving with it."""
        requests = []
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
            if block and item is not None and self.admit_window_s:
                time.sleep(self.admit_window_s)
            while True:
                if item is not None:
                    requests.append(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            requests = [r for r in requests if r.key not in self.cancelled]
        if not requests:
            return
        prompts, speech = self.engine.prompts([(r.history, r.speech) for r in requests])
        for request in requests:
            self.running[request.key] = _Running(request, self.engine.decoder.session())
        self.batch.add([r.key for r in requests], prompts, speech)

    def _drop_cancelled(self) -> None:
        with self.lock:
            cancelled, self.cancelled = self.cancelled, set()
        for key in cancelled:
            if key in self.running:
                self.batch.remove(key)
                del self.running[key]

    def _step(self) -> None:
        self.largest_batch = max(self.largest_batch, len(self.batch))
        events = self.batch.step()
        self.steps += 1
        tokenizer = self.engine.chat.tokenizer
        # speech of answers that have not sounded yet first: their first audio is the latency people hear
        events.sort(key=lambda e: e.kind == "text" or self.running.get(e.item) is None
                    or self.running[e.item].first_audio is not None)
        for event in events:
            running = self.running.get(event.item)
            if running is None:
                continue
            if event.kind == "text":
                running.text_ids.extend(event.tokens)
                text = tokenizer.decode(running.text_ids, skip_special_tokens=True)
                if text.startswith(running.text) and len(text) > len(running.text):
                    running.emit("text", text=text[len(running.text):])
                    running.text = text
            elif event.kind == "speech":
                for audio in running.session.push(event.tokens):
                    running.emit("audio", audio=audio)
            elif event.kind == "end":
                for audio in running.session.finish():
                    running.emit("audio", audio=audio)
        still = {answer.key for answer in self.batch.answers}
        for key in [k for k in self.running if k not in still]:
            running = self.running.pop(key)
            running.emit("done", text=running.text.strip(), first_audio=running.first_audio)
