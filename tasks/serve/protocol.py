"""The WebSocket protocol of `omniforge serve`: OpenAI Realtime's (JSON text frames, audio as base64
16-bit little-endian mono PCM, `audio/pcm` at 24 kHz unless the session says another rate), so the
clients people have (the `openai` SDK, Pipecat, LiveKit) talk to it unchanged. The server resamples:
the model hears 16 kHz and speaks at its decoder's rate (both stated in the session's `omniforge`
field).

Client -> server: `session.update` {session: GA (`audio.input.format`, `audio.output.format`,
`audio.input.turn_detection`, `output_modalities`) or beta (`input_audio_format`, `output_audio_format`,
`turn_detection`, `modalities`) fields}, `input_audio_buffer.append` {audio},
`input_audio_buffer.commit` (a user turn), `input_audio_buffer.clear`, `conversation.item.create`
(a user message of `input_audio`, or typed: `input_text`), `response.create` (answer the user's turn),
`response.cancel`.
Server -> client: `session.created`, `session.updated`, `input_audio_buffer.committed`,
`input_audio_buffer.cleared`, `conversation.item.created`, `response.created`,
`response.output_audio_transcript.delta` {delta} (`response.output_text.delta` for a text-only
session), `response.output_audio.delta` {delta}, their `.done`, `response.done` {response: {status,
output_text, first_audio_seconds}}, `error` {error: {type, code, message}}. Every delta carries
`seconds`: time since the turn was committed. A client that connects with `OpenAI-Beta: realtime=v1`
(the beta API's clients: LiveKit's `RealtimeModelBeta`, Pipecat's `OpenAIRealtimeBetaLLMService`) gets
the beta names of the output events (`response.audio.delta`, `response.audio_transcript.delta`,
`response.text.delta`, ...), as OpenAI's own server does.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from omniforge.tasks.serve.vad import VadSettings

CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "conversation.item.create", "response.create", "response.cancel")
OPENAI_PCM_RATE = 24000  # OpenAI Realtime's `audio/pcm` (and its beta's "pcm16") rate: every client's default
AUDIO_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
BETA_FORMATS = {"pcm16": OPENAI_PCM_RATE}
BETA_HEADER = ("openai-beta", "realtime=v1")
BETA_EVENT_NAMES = {  # GA output event -> its beta name
    "response.output_audio.delta": "response.audio.delta", "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta", "response.output_text.done": "response.text.done"}


class ProtocolError(Exception):
    """A frame the server cannot use; answered with an `error` event, the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def server_event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": f"event_{uuid.uuid4().hex[:12]}", **fields})


def speaks_beta(headers: Any) -> bool:
    """Whether the handshake asks for OpenAI Realtime's beta dialect."""
    name, value = BETA_HEADER
    return value in (headers.get(name) or "").lower().replace(" ", "").split(",")


def output_event(kind: str, beta: bool) -> str:
    """An output event's name in the client's dialect (GA, or beta)."""
    return BETA_EVENT_NAMES.get(kind, kind) if beta else kind


def error_event(code: str, message: str) -> str:
    return server_event("error", error={"type": "invalid_request_error", "code": code, "message": message})


def parse_client_event(text: str) -> dict:
    """A client frame as a dict with a known `type`, or ProtocolError naming what is wrong."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ProtocolError("invalid_json", f"the frame is not JSON ({err})") from None
    if not isinstance(event, dict) or event.get("type") not in CLIENT_EVENTS:
        kind = event.get("type") if isinstance(event, dict) else None
        raise ProtocolError("unknown_event", f"unknown event type {kind!r}; expected one of {', '.join(CLIENT_EVENTS)}")
    return event


def decode_pcm16(audio: Any) -> np.ndarray:
    """base64 16-bit little-endian PCM -> float32 samples in [-1, 1)."""
    if not isinstance(audio, str):
        raise ProtocolError("invalid_audio", "`audio` must be a base64 string of 16-bit PCM")
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError("invalid_audio", f"`audio` is not base64 ({err})") from None
    if len(data) % 2:
        raise ProtocolError("invalid_audio", "`audio` must hold whole 16-bit samples (an even byte count)")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def encode_pcm16(wave: np.ndarray) -> str:
    samples = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 32767 / 32768) * 32768.0
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


@dataclass(frozen=True)
class SessionSettings:
    """What a client chose for its session (`session.update`)."""

    input_rate: int = OPENAI_PCM_RATE
    output_rate: int = OPENAI_PCM_RATE
    modalities: tuple[str, ...] = ("audio",)
    turn_detection: VadSettings | None = None  # None: the client commits turns and asks for answers

    @property
    def speaks(self) -> bool:
        return "audio" in self.modalities

    def describe(self, session_id: str, model: str, extra: dict) -> dict:
        """The session object of `session.created` / `session.updated`, in OpenAI Realtime's shape."""
        return {"id": session_id, "object": "realtime.session", "type": "realtime", "model": model,
                "output_modalities": list(self.modalities),
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.input_rate},
                                    "turn_detection": None if self.turn_detection is None else
                                    {"type": "server_vad", **asdict(self.turn_detection)}},
                          "output": {"format": {"type": "audio/pcm", "rate": self.output_rate}}},
                "omniforge": extra}


def _rate(format_: Any, where: str) -> int:
    """A format field (GA {type, rate} or beta name) -> its rate, or ProtocolError."""
    if isinstance(format_, str) and format_ in BETA_FORMATS:
        return BETA_FORMATS[format_]
    if isinstance(format_, dict) and format_.get("type", "audio/pcm") == "audio/pcm":
        rate = format_.get("rate", OPENAI_PCM_RATE)
        if rate in AUDIO_RATES:
            return rate
        raise ProtocolError("unsupported_audio_rate", f"{where}.rate {rate!r}: use one of {AUDIO_RATES}")
    raise ProtocolError("unsupported_audio_format", f"{where} {format_!r}: only 16-bit PCM (`audio/pcm`, "
                                                    "or `pcm16`) is spoken here")


def update_session(current: SessionSettings, session: Any) -> SessionSettings:
    """Apply a `session.update`'s session (GA or beta fields); what it does not name stays."""
    if not isinstance(session, dict):
        raise ProtocolError("invalid_session", "`session` must be an object")
    audio = session.get("audio") or {}
    inputs, outputs = audio.get("input") or {}, audio.get("output") or {}
    changes: dict[str, Any] = {}
    if "format" in inputs:
        changes["input_rate"] = _rate(inputs["format"], "session.audio.input.format")
    if "input_audio_format" in session:
        changes["input_rate"] = _rate(session["input_audio_format"], "session.input_audio_format")
    if "format" in outputs:
        changes["output_rate"] = _rate(outputs["format"], "session.audio.output.format")
    if "output_audio_format" in session:
        changes["output_rate"] = _rate(session["output_audio_format"], "session.output_audio_format")
    if "turn_detection" in inputs or "turn_detection" in session:
        changes["turn_detection"] = _turn_detection(inputs.get("turn_detection", session.get("turn_detection")))
    modalities = session.get("output_modalities", session.get("modalities"))
    if modalities is not None:
        if not isinstance(modalities, list) or not set(modalities) <= {"audio", "text"} or not modalities:
            raise ProtocolError("invalid_modalities", f"output modalities {modalities!r}: [\"audio\"] or [\"text\"]")
        changes["modalities"] = tuple(modalities)
    return replace(current, **changes)


def user_message(item: Any) -> tuple[str, str]:
    """A `conversation.item.create` user message as ("audio", its base64 PCM) or ("text", what was
    typed); ProtocolError otherwise."""
    if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") != "user":
        raise ProtocolError("unsupported_item", "conversation.item.create: only user messages are taken")
    fields = {"input_audio": "audio", "input_text": "text"}  # a part's type -> the field holding its content
    parts = [p for p in (item.get("content") if isinstance(item.get("content"), list) else [])
             if isinstance(p, dict) and p.get("type") in fields]
    content = parts[0].get(fields[parts[0]["type"]]) if len(parts) == 1 else None
    if not isinstance(content, str):
        raise ProtocolError("unsupported_content", "a user message needs exactly one `input_audio` {audio} or "
                                                   "`input_text` {text} part")
    kind = fields[parts[0]["type"]]
    if kind == "text" and not content.strip():
        raise ProtocolError("empty_text", "an `input_text` part without text")
    return kind, content


def _turn_detection(detection: Any) -> VadSettings | None:
    """null (the client commits turns) or `server_vad` with OpenAI's fields; `semantic_vad` (the default
    of some clients) is heard as `server_vad` with its defaults, as the session then says; anything else:
    ProtocolError."""
    if detection is None:
        return None
    kind = detection.get("type") if isinstance(detection, dict) else detection
    if kind == "semantic_vad":
        return VadSettings(**{k: v for k, v in detection.items() if k in ("create_response", "interrupt_response")
                              and isinstance(v, bool)})
    if kind != "server_vad":
        raise ProtocolError("unsupported_turn_detection", f"turn detection {kind!r}: null, server_vad or semantic_vad "
                                                          "(heard as server_vad)")
    known = {f.name: f.type for f in fields(VadSettings)}
    values = {k: v for k, v in detection.items() if k in known and v is not None}
    wrong = [k for k, v in values.items() if isinstance(v, bool) != (known[k] == "bool")
             or not isinstance(v, (int, float))]
    if wrong:
        raise ProtocolError("invalid_turn_detection", f"turn_detection fields of the wrong type: {', '.join(wrong)}")
    return VadSettings(**values)
