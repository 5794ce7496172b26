"""`omniforge serve`: the ASGI app. `/` is the talk page, `/v1/realtime` the WebSocket protocol
(`tasks/serve/protocol.py`). Each connection is one multi-turn conversation: its history is kept as
in training, each committed turn is answered by the shared model thread (`BatchedAnswerer`)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import uuid
from collections.abc import Mapping
from importlib import resources
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, Response

from omniforge.config import PipelineConfig
from omniforge.config.serve import ServeConfig
from omniforge.errors import InputError
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.model.streaming import sampling_generator
from omniforge.storage import ArtifactRef, ArtifactStore
from omniforge.tasks.common.audio_ops import AudioResampler, resample
from omniforge.tasks.evaluate.steps import open_engine, speaking_decoder
from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
from omniforge.tasks.serve.engine import AnswerEvent, AnswerRequest, BatchedAnswerer, UserTurn
from omniforge.tasks.serve.protocol import (
    ProtocolError,
    SessionSettings,
    decode_pcm16,
    encode_pcm16,
    error_event,
    output_event,
    parse_client_event,
    server_event,
    speaks_beta,
    update_session,
    user_message,
)
from omniforge.tasks.serve.vad import TurnDetector

PAGE_FILES = {"worklets.js": "text/javascript"}
BROWSER_KEY = "openai-insecure-api-key."  # the WebSocket subprotocol that carries a browser's key (OpenAI's convention)
log = logging.getLogger(__name__)


def open_served_engine(store: ArtifactStore, config: PipelineConfig) -> StreamingEngine:
    """The served checkpoint with its units -> audio decoder (an error names the command that trains
    one if its units have none), answering as `serve` says: one conversation at a time, in the
    caller's thread."""
    settings = config.serve
    checkpoint = store.manifest(store.resolve(ArtifactRef.parse(settings.checkpoint)))
    return open_engine(store, checkpoint, speaking_decoder(store, config, checkpoint), settings,
                       settings.decoder)


def open_answerer(store: ArtifactStore, config: PipelineConfig) -> BatchedAnswerer:
    """`open_served_engine` behind the model thread that answers every conversation in one batch.
    Its limits are checked against what the model accepts before anyone connects."""
    engine, settings = open_served_engine(store, config), config.serve
    if settings.max_turn_seconds > engine.max_turn_seconds:
        raise InputError(f"serve.max_turn_seconds={settings.max_turn_seconds:g} is longer than the checkpoint's speech "
                         f"encoder accepts ({engine.max_turn_seconds:g} s); set it to at most that")
    return BatchedAnswerer(engine, engine.settings, settings.torch_threads, sampling_generator(engine.model, 0),
                           settings.admit_window_ms / 1000, settings.prompt_threads)


class Admission:
    """Who may open a conversation: pages of the server's own origin or an allowed one (a browser
    always says its page's origin; SDKs say none), holding the token when one is set."""

    def __init__(self, settings: ServeConfig) -> None:
        self.origins = set(settings.allowed_origins)
        secret = settings.token.get_secret_value() if settings.token is not None else None
        if settings.token_from_env is not None:
            secret = os.environ.get(settings.token_from_env)
            if not secret:
                raise InputError(f"serve.token_from_env: the environment variable {settings.token_from_env} is not set")
        self.token = secret

    def refusal(self, headers: Mapping[str, str], subprotocols: list[str]) -> str | None:
        """Why this handshake is refused, or None."""
        origin = headers.get("origin")
        if origin is not None and "*" not in self.origins and origin not in self.origins:
            if urlsplit(origin).netloc != headers.get("host"):
                return f"origin {origin} is not allowed (serve.allowed_origins)"
        if self.token is None:
            return None
        offered = [headers.get("authorization", "").removeprefix("Bearer ").strip()]
        offered += [p.removeprefix(BROWSER_KEY) for p in subprotocols if p.startswith(BROWSER_KEY)]
        if not any(hmac.compare_digest(candidate.encode(), self.token.encode()) for candidate in offered):
            return "missing or wrong token (serve.token)"
        return None


class MessageBudget:
    """A token bucket: `rate` messages a second, bursts of up to a second's worth."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.left, self.at = rate, rate, now

    def take(self, now: float) -> bool:
        self.left = min(self.rate, self.left + (now - self.at) * self.rate)
        self.at = now
        if self.left < 1:
            return False
        self.left -= 1
        return True


class Listening:
    """server_vad: a conversation's stream at 16 kHz through its turn detector, keeping the speech since
    it started (and the prefix padding before it) until it ends."""

    def __init__(self, session: SessionSettings, max_turn_seconds: float) -> None:
        self.vad = session.turn_detection
        self.detector = TurnDetector(self.vad)
        self.to_model = AudioResampler(session.input_rate, INPUT_SAMPLE_RATE)
        self.prefix = self.vad.prefix_padding_ms * INPUT_SAMPLE_RATE // 1000
        self.longest = int(max_turn_seconds * INPUT_SAMPLE_RATE)
        self.stream, self.stream_from = np.zeros(0, np.float32), 0  # kept samples, and where they start
        self.speech_from: int | None = None

    def hear(self, audio: np.ndarray) -> list[tuple[str, int, np.ndarray | None]]:
        heard = self.to_model(audio)
        self.stream = np.concatenate([self.stream, heard])
        changes = []
        for kind, at in self.detector.feed(heard):
            if kind == "start":
                self.speech_from = max(at - self.prefix, self.stream_from)
                changes.append(("start", at, None))
            elif self.speech_from is not None:  # (a turn cut for length has no end left to hear)
                changes.append(("end", at, self.stream[self.speech_from - self.stream_from:at - self.stream_from]))
                self.speech_from = None
        end = self.stream_from + len(self.stream)
        if self.speech_from is not None and end - self.speech_from > self.longest:
            self.speech_from = None
            raise ProtocolError("turn_too_long", f"speech ran past {self.longest / INPUT_SAMPLE_RATE:g} s; it was "
                                                 "dropped")
        keep = self.speech_from if self.speech_from is not None else end - self.prefix
        cut = min(max(0, keep - self.stream_from), len(self.stream))
        self.stream, self.stream_from = self.stream[cut:], self.stream_from + cut
        return changes


class Conversation:
    """One connection: its session settings, history, the user's turn being received, the answer in flight."""

    def __init__(self, settings: ServeConfig, beta: bool = False) -> None:
        self.settings = settings
        self.beta = beta  # the client speaks OpenAI Realtime's beta dialect (`OpenAI-Beta: realtime=v1`)
        self.session = SessionSettings()
        self.id = f"sess_{uuid.uuid4().hex[:12]}"
        self.history: list[tuple[str, str]] = []
        self.turns: list[UserTurn] = []
        self.unanswered = 0  # user turns since the last answer: what response.create answers
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.answering: str | None = None  # the response id in flight
        self.listening: Listening | None = None  # server_vad: the stream as the detector hears it

    def output(self, kind: str, **fields) -> str:
        """An answer's output event (named in the client's dialect)."""
        return server_event(output_event(kind, self.beta), **fields)

    def update(self, session: SessionSettings) -> None:
        if self.buffered or self.answering is not None or (self.listening and self.listening.speech_from is not None):
            raise ProtocolError("session_busy", "update the session between turns (audio is buffered or an answer "
                                                "is in progress)")
        self.session = session
        self.listening = None if session.turn_detection is None else Listening(session, self.settings.max_turn_seconds)

    def append(self, audio: np.ndarray) -> list[tuple[str, int, np.ndarray | None]]:
        """Buffer the audio (the client commits it), or with server_vad hear it: the speech starts
        and ends it brings (16 kHz sample, and each ended turn's wave)."""
        if not len(audio):
            raise ProtocolError("empty_audio", "input_audio_buffer.append without samples")
        if self.listening is not None:
            return self.listening.hear(audio)
        if self.buffered + len(audio) > self.settings.max_turn_seconds * self.session.input_rate:
            self.clear()
            raise ProtocolError("turn_too_long", f"a turn may hold at most {self.settings.max_turn_seconds:g} s of "
                                                 "audio; the buffer was cleared")
        self.buffer.append(audio)
        self.buffered += len(audio)
        return []

    def clear(self) -> None:
        self.buffer, self.buffered = [], 0

    def commit(self) -> str:
        """The buffered audio becomes a user turn; returns its item id."""
        if not self.buffered:
            raise ProtocolError("input_audio_buffer_commit_empty", "append audio before committing a turn")
        wave = np.concatenate(self.buffer)
        self.clear()
        return self.add_turn(wave)

    def add_turn(self, wave: np.ndarray) -> str:
        """A user turn at the session's input rate."""
        if len(wave) > self.settings.max_turn_seconds * self.session.input_rate:
            raise ProtocolError("turn_too_long", f"a turn may hold at most {self.settings.max_turn_seconds:g} s of audio")
        return self.add_heard(resample(wave, self.session.input_rate, INPUT_SAMPLE_RATE))

    def add_heard(self, wave: np.ndarray) -> str:
        """A user turn at the model's rate; returns its item id."""
        return self._add(UserTurn(wave), "")

    def add_typed(self, text: str) -> str:
        """A user turn typed instead of spoken; returns its item id."""
        if len(text) > self.settings.max_typed_chars:
            raise ProtocolError("text_too_long", f"a typed message may hold at most {self.settings.max_typed_chars} "
                                                 "characters (serve.max_typed_chars)")
        return self._add(UserTurn(None), text)

    def _add(self, turn: UserTurn, text: str) -> str:
        self._require_idle()
        if len(self.turns) >= self.settings.max_turns:
            raise ProtocolError("conversation_full", f"a conversation keeps at most {self.settings.max_turns} user "
                                                     "turns (serve.max_turns); start a new one")
        self.turns.append(turn)
        self.history.append(("user", text))
        self.unanswered += 1
        return f"item_{uuid.uuid4().hex[:12]}"

    def respond(self) -> str:
        self._require_idle()
        if not self.unanswered:
            raise ProtocolError("no_user_turn", "commit a user turn (input_audio_buffer.commit) before response.create")
        self.answering = f"resp_{uuid.uuid4().hex[:12]}"
        return self.answering

    def _require_idle(self) -> None:
        if self.answering is not None:
            raise ProtocolError("response_in_progress", "wait for response.done (or send response.cancel) first")

    def answered(self, text: str | None) -> None:
        """The answer in flight ended: its text joins the history, or (None: cancelled, failed) the
        conversation is as if its user turns had not been sent, their speech and encodings too."""
        if text is not None:
            self.history.append(("assistant", text))
        else:
            del self.history[len(self.history) - self.unanswered:]
            del self.turns[len(self.turns) - self.unanswered:]
        self.unanswered = 0
        self.answering = None


def create_app(answerer: BatchedAnswerer, settings: ServeConfig) -> FastAPI:
    app = FastAPI(title="omniforge", docs_url=None, redoc_url=None)
    model_rate = answerer.engine.decoder.sample_rate
    app.state.active = 0

    def describe(conversation: Conversation) -> dict:
        return conversation.session.describe(conversation.id, settings.checkpoint, {
            "model_input_rate": INPUT_SAMPLE_RATE, "model_output_rate": model_rate,
            "max_turn_seconds": settings.max_turn_seconds})

    @app.get("/")
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("omniforge.tasks.serve").joinpath("page/index.html").read_text())

    @app.get("/status")
    def status() -> dict:
        """What the server is doing: for health checks and load tests."""
        return {"checkpoint": settings.checkpoint, "conversations": app.state.active,
                "max_conversations": settings.max_conversations, "answering": len(answerer.running),
                "largest_batch": answerer.largest_batch, "steps": answerer.steps,
                "encoded_turns": answerer.encoded_turns}

    @app.get("/page/{name}")
    def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            return Response(status_code=404)
        body = resources.files("omniforge.tasks.serve").joinpath(f"page/{name}").read_text()
        return Response(body, media_type=PAGE_FILES[name])

    admission = Admission(settings)

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        refused = admission.refusal(ws.headers, ws.scope.get("subprotocols", []))
        if refused:
            log.warning("refused a connection: %s", refused)
            await ws.close(code=1008, reason=refused)  # before the handshake: the client gets HTTP 403
            return
        await ws.accept(subprotocol="realtime" if "realtime" in ws.scope.get("subprotocols", []) else None)
        if app.state.active >= settings.max_conversations:
            await ws.send_text(error_event("server_busy", f"{settings.max_conversations} conversations are in "
                                                          "progress; try again later"))
            await ws.close(code=1013)
            return
        app.state.active += 1
        conversation = Conversation(settings, beta=speaks_beta(ws.headers))
        outbox: asyncio.Queue = asyncio.Queue()
        sender = asyncio.create_task(_send(ws, outbox, conversation))
        try:
            await ws.send_text(server_event("session.created", session=describe(conversation)))
            await _receive(ws, conversation, answerer, outbox, asyncio.get_running_loop())
        except WebSocketDisconnect:
            pass
        finally:
            app.state.active -= 1
            if conversation.answering is not None:
                answerer.cancel(conversation.answering)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _receive(ws: WebSocket, conversation: Conversation, answerer: BatchedAnswerer, outbox: asyncio.Queue,
                       loop: asyncio.AbstractEventLoop) -> None:
        ends = loop.time() + settings.max_session_s
        budget = MessageBudget(settings.max_messages_per_s, loop.time())
        while True:
            wait = min(settings.idle_timeout_s, ends - loop.time())
            try:
                message = await asyncio.wait_for(ws.receive(), timeout=max(wait, 0.0))
            except asyncio.TimeoutError:
                idle = wait == settings.idle_timeout_s
                code = "idle_timeout" if idle else "session_expired"
                await ws.send_text(error_event(code, f"closed after {wait:g} s " + ("without a message" if idle else
                                                                                     "(serve.max_session_s)")))
                await ws.close(code=1000)
                return
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                if not budget.take(loop.time()):
                    raise ProtocolError("rate_limited", f"at most {settings.max_messages_per_s:g} messages a second; "
                                                        "this one was dropped")
                if message.get("text") is None:
                    raise ProtocolError("binary_frame", "frames are JSON text (audio goes base64 in "
                                                        "input_audio_buffer.append)")
                if len(message["text"]) > settings.max_frame_bytes:
                    raise ProtocolError("frame_too_large", f"a frame may hold at most {settings.max_frame_bytes} bytes")
                event = parse_client_event(message["text"])
                await _handle(ws, event, conversation, answerer, outbox, loop)
            except ProtocolError as err:
                await ws.send_text(error_event(err.code, str(err)))

    async def _handle(ws: WebSocket, event: dict, conversation: Conversation, answerer: BatchedAnswerer,
                      outbox: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
        kind = event["type"]
        if kind == "session.update":
            conversation.update(update_session(conversation.session, event.get("session")))
            await ws.send_text(server_event("session.updated", session=describe(conversation)))
        elif kind == "input_audio_buffer.append":
            for change, at, wave in conversation.append(decode_pcm16(event.get("audio"))):
                await _turn_change(ws, conversation, answerer, outbox, loop, change, at, wave)
        elif kind == "input_audio_buffer.clear":
            conversation.clear()
            await ws.send_text(server_event("input_audio_buffer.cleared"))
        elif kind == "input_audio_buffer.commit":
            item = conversation.commit()
            await ws.send_text(server_event("input_audio_buffer.committed", item_id=item, previous_item_id=None))
        elif kind == "conversation.item.create":
            part, content = user_message(event.get("item"))
            item = (conversation.add_typed(content) if part == "text" else
                    conversation.add_turn(decode_pcm16(content)))
            await ws.send_text(server_event("conversation.item.created", item={
                "id": item, "type": "message", "role": "user", "status": "completed"}))
        elif kind == "response.cancel":
            await _interrupt(ws, conversation, answerer)
        else:  # response.create
            await _respond(ws, conversation, answerer, outbox, loop)

    async def _turn_change(ws: WebSocket, conversation: Conversation, answerer: BatchedAnswerer, outbox: asyncio.Queue,
                           loop: asyncio.AbstractEventLoop, change: str, at: int, wave: np.ndarray | None) -> None:
        """server_vad heard speech start (barge-in: the answer in flight is cancelled) or end (the
        turn is committed and answered)."""
        vad, ms = conversation.session.turn_detection, at * 1000 // INPUT_SAMPLE_RATE
        if change == "start":
            await ws.send_text(server_event("input_audio_buffer.speech_started", audio_start_ms=ms))
            if vad.interrupt_response:
                await _interrupt(ws, conversation, answerer)
            return
        await ws.send_text(server_event("input_audio_buffer.speech_stopped", audio_end_ms=ms))
        item = conversation.add_heard(wave)
        await ws.send_text(server_event("input_audio_buffer.committed", item_id=item, previous_item_id=None))
        if vad.create_response:
            await _respond(ws, conversation, answerer, outbox, loop)

    async def _interrupt(ws: WebSocket, conversation: Conversation, answerer: BatchedAnswerer) -> None:
        """Cancel the answer in flight, if any, and end it at once: the next turn may follow right away."""
        if conversation.answering is not None:
            answerer.cancel(conversation.answering)
            await _finish(ws, conversation, conversation.answering, AnswerEvent("cancelled", 0.0))

    async def _respond(ws: WebSocket, conversation: Conversation, answerer: BatchedAnswerer, outbox: asyncio.Queue,
                       loop: asyncio.AbstractEventLoop) -> None:
        response = conversation.respond()
        await ws.send_text(server_event("response.created", response={"id": response, "object": "realtime.response",
                                                                       "status": "in_progress"}))

        def listener(answer: AnswerEvent, response: str = response) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, (response, answer))

        answerer.submit(AnswerRequest(response, list(conversation.history), list(conversation.turns), listener))

    async def _send(ws: WebSocket, outbox: asyncio.Queue, conversation: Conversation) -> None:
        """Answer events to the client, in order; a finished answer joins the history."""
        resamplers: dict[str, AudioResampler] = {}  # the answer in flight's, from the decoder's rate to the session's
        while True:
            response, answer = await outbox.get()
            if response != conversation.answering:
                continue  # a cancelled answer's late events
            text_events, ids = _output_names(conversation, response)
            if answer.kind == "text":
                await ws.send_text(conversation.output(f"{text_events}.delta", **ids, delta=answer.text,
                                                   seconds=round(answer.seconds, 4)))
            elif answer.kind == "audio" and conversation.session.speaks:
                if response not in resamplers:
                    resamplers.clear()
                    resamplers[response] = AudioResampler(model_rate, conversation.session.output_rate)
                await _audio_delta(ws, conversation, ids, resamplers[response](answer.audio), answer.seconds)
            elif answer.kind != "audio":
                tail = resamplers.pop(response)(None) if response in resamplers else None
                await _finish(ws, conversation, response, answer, tail)

    async def _audio_delta(ws: WebSocket, conversation: Conversation, ids: dict, audio: np.ndarray,
                           seconds: float) -> None:
        await ws.send_text(conversation.output("response.output_audio.delta", **ids, delta=encode_pcm16(audio),
                                               samples=len(audio), seconds=round(seconds, 4)))

    def _output_names(conversation: Conversation, response: str) -> tuple[str, dict]:
        """The text events' prefix (the transcript of a spoken answer, else text) and an answer's ids."""
        text_events = "response.output_audio_transcript" if conversation.session.speaks else "response.output_text"
        return text_events, {"response_id": response, "item_id": f"item_{response[5:]}", "output_index": 0,
                             "content_index": 0}

    async def _finish(ws: WebSocket, conversation: Conversation, response: str, answer: AnswerEvent,
                      tail: np.ndarray | None = None) -> None:
        text_events, ids = _output_names(conversation, response)
        status = {"done": "completed", "cancelled": "cancelled"}.get(answer.kind, "failed")
        conversation.answered(answer.text if status == "completed" else None)
        if status == "completed":
            if tail is not None and len(tail):
                await _audio_delta(ws, conversation, ids, tail, answer.seconds)
            field = "transcript" if conversation.session.speaks else "text"
            await ws.send_text(conversation.output(f"{text_events}.done", **ids, **{field: answer.text}))
            if conversation.session.speaks:
                await ws.send_text(conversation.output("response.output_audio.done", **ids))
        await ws.send_text(server_event("response.done", response={
            "id": response, "object": "realtime.response", "status": status,
            "output_text": answer.text if status == "completed" else "",
            "first_audio_seconds": None if answer.first_audio is None else round(answer.first_audio, 4),
            **({"error": answer.text} if status == "failed" else {})}))

    return app
