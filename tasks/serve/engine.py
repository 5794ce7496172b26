"""Many conversations, one batch: a thread runs the model for every answer in progress.

A committed user turn becomes a request; at the next step boundary its prompt is encoded and
prefilled and it joins the running `StreamingBatch`. Each step's text tokens go to their answer's
listener; its unit chunks go to the audio thread, which decodes them through that answer's own
decoder session (so audio leaves as soon as it is exact) on the other core while the model thread
takes the next step. An answer leaves the batch when its text and speech have ended, or at once
when its listener goes away.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from omniforge.model.streaming import GenerationSettings, StreamingBatch
from omniforge.tasks.common import threads
from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
from omniforge.tasks.units.decoders.interface import AudioSession

log = logging.getLogger(__name__)


@dataclass
class AnswerEvent:
    kind: str                # "text" (delta), "audio" (samples), "done", "error"
    seconds: float           # since the user's turn was committed
    text: str = ""
    audio: np.ndarray | None = None
    first_audio: float | None = None  # with "done": when the answer's first audio left


@dataclass(eq=False)
class UserTurn:
    """A committed user turn: its 16 kHz wave, and its speech encoding once the model thread has made
    it (`wave` None: the user typed this turn; its text is in the history). The encoding belongs to the
    turn, not to its position: a turn taken back (cancelled, failed) takes its encoding with it, and
    each turn goes through the speech encoder once, not once per later answer."""

    wave: np.ndarray | None
    encoded: torch.Tensor | None = None

    @property
    def spoken(self) -> bool:
        return self.wave is not None


@dataclass
class AnswerRequest:
    key: str
    history: list[tuple[str, str]]  # (role, text), ending with the user's turn
    turns: list[UserTurn]           # every user turn, in order (the history's user entries)
    listener: Callable[[AnswerEvent], None]  # called from the model thread and the audio thread, one at a time
    committed: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by `cancel` from any thread; honoured at every point of the request's life

    def typed(self) -> list[int]:
        """The history indices of the user turns that were typed."""
        users = [i for i, (role, _) in enumerate(self.history) if role == "user"]
        return [index for index, turn in zip(users, self.turns, strict=True) if not turn.spoken]

    def fail(self, err: Exception) -> None:
        self.listener(AnswerEvent("error", time.perf_counter() - self.committed, text=f"{type(err).__name__}: {err}"))


@dataclass
class _Running:
    request: AnswerRequest
    session: AudioSession
    text_ids: list[int] = field(default_factory=list)
    text: str = ""
    first_audio: float | None = None
    cancelled: bool = False  # its listener went away: the audio thread skips its work
    lock: threading.Lock = field(default_factory=threading.Lock)  # two threads emit: its events keep their time order

    def emit(self, kind: str, **payload) -> None:
        with self.lock:
            seconds = time.perf_counter() - self.request.committed
            if kind == "audio" and self.first_audio is None:
                self.first_audio = seconds
            self.request.listener(AnswerEvent(kind, seconds, **payload))


class _AudioThread:
    """Units -> audio for every answer, on its own thread: the decoder runs on one core while the
    model thread writes the next tokens on the other. An answer's work is done in order; answers
    that have not sounded yet go first, as their first audio is the latency people hear."""

    def __init__(self) -> None:
        self.queue: queue.PriorityQueue = queue.PriorityQueue()
        self.order = itertools.count()
        self.thread = threading.Thread(target=self._loop, name="omniforge-audio", daemon=True)
        self.thread.start()

    def put(self, running: _Running, work: str, units: list[int] | None = None) -> None:
        """work: "units" (decode these), "end" (the speech ended) or "done" (the answer ended)."""
        self.queue.put((running.first_audio is not None, next(self.order), running, work, units))

    def close(self) -> None:
        self.queue.put((False, -1, None, "", None))

    def _loop(self) -> None:
        while True:
            _, _, running, work, units = self.queue.get()
            if running is None:
                return
            if running.cancelled:
                continue
            try:
                if work == "units":
                    audio = running.session.push(units)
                elif work == "end":
                    audio = running.session.finish()
                else:
                    running.emit("done", text=running.text.strip(), first_audio=running.first_audio)
                    continue
                for chunk in audio:
                    running.emit("audio", audio=chunk)
            except Exception as err:  # noqa: BLE001 - a bug fails this answer, not the server
                log.exception("the audio thread failed an answer")
                running.cancelled = True
                running.emit("error", text=f"{type(err).__name__}: {err}")


class BatchedAnswerer:
    """The model thread. `submit` and `cancel` may be called from any thread. A request that fails
    (its prompt cannot be encoded, say) gets an "error" event alone; the others go on."""

    def __init__(self, engine: StreamingEngine, settings: GenerationSettings, torch_threads: int = 1,
                 generator: torch.Generator | None = None, admit_window_s: float = 0.0, prompt_threads: int = 1) -> None:
        self.engine, self.settings, self.torch_threads, self.generator = engine, settings, torch_threads, generator
        self.prompt_threads = prompt_threads
        self.admit_window_s = admit_window_s
        self.inbox: queue.Queue[AnswerRequest | None] = queue.Queue()
        self.live: dict[str, AnswerRequest] = {}  # submitted and not ended: what `cancel` can reach
        self.lock = threading.Lock()
        self.batch = StreamingBatch(engine.model, settings, generator, engine.pronounce)
        self.running: dict[str, _Running] = {}
        self.steps = 0  # batch steps taken (for /status and load tests)
        self.encoded_turns = 0  # user turns run through the speech encoder
        self.largest_batch = 0
        self._stop = False
        self.audio = _AudioThread()
        self.thread = threading.Thread(target=self._loop, name="omniforge-answerer", daemon=True)
        self.thread.start()

    def submit(self, request: AnswerRequest) -> None:
        with self.lock:
            self.live[request.key] = request
        self.inbox.put(request)

    def cancel(self, key: str) -> None:
        with self.lock:
            request = self.live.get(key)
            if request is not None:
                request.cancelled = True
        self.inbox.put(None)  # wake the thread if it waits

    def _end(self, key: str) -> None:
        with self.lock:
            self.live.pop(key, None)

    def close(self) -> None:
        self._stop = True
        self.inbox.put(None)
        self.audio.close()

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
                for key, running in list(self.running.items()):
                    running.cancelled = True
                    running.emit("error", text=f"{type(err).__name__}: {err}")
                    self._end(key)
                self.running.clear()
                self.batch = StreamingBatch(self.engine.model, self.settings, self.generator, self.engine.pronounce)

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
        for request in requests:
            if request.cancelled:
                self._end(request.key)
        requests = [r for r in requests if not r.cancelled]
        if requests:
            with threads.torch_threads(self.prompt_threads):
                self._prefill(requests)

    def _prefill(self, requests: list[AnswerRequest]) -> None:
        """The requests join the batch in one prefill; if that fails, each tries alone, so a bad
        request fails by itself."""
        try:
            prompts = [self.engine.text_prompt(r.history, r.typed()) for r in requests]
            speech = self._encoded_speech(requests)
        except Exception as err:  # noqa: BLE001 - one bad turn must not fail the others
            if len(requests) > 1:
                for request in requests:
                    self._prefill([request])
                return
            log.warning("request %s failed: %s", requests[0].key, err)
            requests[0].fail(err)
            self._end(requests[0].key)
            return
        for request in requests:
            self.running[request.key] = _Running(request, self.engine.decoder.session())
        self.batch.add([r.key for r in requests], prompts, speech)

    def _encoded_speech(self, requests: list[AnswerRequest]) -> list[torch.Tensor]:
        """Every user turn of these requests, in order; the turns not encoded before go through the
        encoder in one batch."""
        missing = list({id(t): t for r in requests for t in r.turns if t.spoken and t.encoded is None}.values())
        if missing:
            fresh = self.engine.encode_speech([turn.wave for turn in missing])
            self.encoded_turns += len(fresh)
            for turn, embeddings in zip(missing, fresh):
                turn.encoded = embeddings
        return [turn.encoded for r in requests for turn in r.turns if turn.spoken]

    def _drop_cancelled(self) -> None:
        for key in [k for k, running in self.running.items() if running.request.cancelled]:
            self.batch.remove(key)
            self.running.pop(key).cancelled = True
            self._end(key)

    def _step(self) -> None:
        self.largest_batch = max(self.largest_batch, len(self.batch))
        events = self.batch.step()
        self.steps += 1
        tokenizer = self.engine.chat.tokenizer
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
                self.audio.put(running, "units", event.tokens)
            elif event.kind == "end":
                self.audio.put(running, "end")
        still = {answer.key for answer in self.batch.answers}
        for key in [k for k in self.running if k not in still]:
            self.audio.put(self.running.pop(key), "done")
            self._end(key)
