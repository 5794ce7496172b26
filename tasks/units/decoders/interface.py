"""What every units -> audio backend offers: one-shot decoding, pull-style streaming and push sessions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np


class UnitDecoder(Protocol):
    """Units back to audio, whichever the backend: the learned one, or CosyVoice 2's."""

    @property
    def sample_rate(self) -> int: ...

    def lookahead_units(self) -> int:
        """Units that must be known before a sample can be emitted (the streaming latency)."""

    def decode(self, units: list[int]) -> np.ndarray:
        """All the audio at once."""

    def stream(self, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
        """Audio chunks as the unit chunks arrive."""

    def session(self) -> "AudioSession":
        """The same, pushed: for a caller that gets units as events (a server's many answers)."""


class AudioSession(Protocol):
    def push(self, units: list[int]) -> list[np.ndarray]:
        """Audio made exact by these units (maybe none yet)."""

    def finish(self) -> list[np.ndarray]:
        """The rest of the audio, once the units have ended."""


def stream_through(session: AudioSession, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
    """Pull-style streaming over a push session (the one way both decoders stream)."""
    for chunk in chunks:
        yield from session.push(chunk)
    yield from session.finish()
