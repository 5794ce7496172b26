"""The WebSocket protocol of `omniforge serve`: OpenAI Realtime's event names and audio encoding
(JSON text frames, audio as base64 16-bit little-endian mono PCM), with our rates: the client sends
16 kHz (what the model hears), the server sends the decoder's rate (22.05 kHz offline), both stated
in `session.created`.

Client -> server: `input_audio_buffer.append` {audio}, `input_audio_buffer.commit` (end of the
user's turn), `input_audio_buffer.clear`, `response.cancel`.
Server -> client: `session.created`, `input_audio_buffer.committed`, `input_audio_buffer.cleared`,
`response.created`, `response.text.delta` {delta}, `response.audio.delta` {delta}, `response.text.done`,
`response.audio.done`, `response.done` {response: {status, output_text, first_audio_seconds}}, `error`
{error: {type, code, message}}. Every delta carries `seconds`: time since the turn was committed.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

import numpy as np

CLIENT_EVENTS = ("input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
                 "response.cancel")


class ProtocolError(Exception):
    """A frame the server cannot use; answered with an `error` event, the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def server_event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": f"event_{uuid.uuid4().hex[:12]}", **fields})


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
