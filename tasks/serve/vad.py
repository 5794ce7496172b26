"""Server-side turn detection, OpenAI Realtime's `server_vad`: Silero VAD (its model ships in the
`silero-vad` wheel) hears each conversation's 16 kHz stream in 32 ms windows and says where speech
starts and where it has ended (after enough silence). Each conversation has its own detector: the
model keeps state between windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from omniforge.model.mel import INPUT_SAMPLE_RATE

WINDOW = 512  # samples per window at 16 kHz: what Silero VAD takes


@dataclass(frozen=True)
class VadSettings:
    """A session's `turn_detection: {type: server_vad, ...}` (OpenAI's fields and defaults)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300    # audio kept before the detected start
    silence_duration_ms: int = 500  # silence that ends a turn
    create_response: bool = True    # answer as soon as the turn ends
    interrupt_response: bool = True  # speech while an answer plays cancels it (barge-in)


class TurnDetector:
    """Where speech starts and ends in a stream fed in any chunk sizes (sample indices at 16 kHz)."""

    def __init__(self, settings: VadSettings) -> None:
        from silero_vad import VADIterator, load_silero_vad

        self.settings = settings
        self.vad = VADIterator(load_silero_vad(onnx=True), threshold=settings.threshold,
                               sampling_rate=INPUT_SAMPLE_RATE, min_silence_duration_ms=settings.silence_duration_ms,
                               speech_pad_ms=0)
        self.pending = np.zeros(0, np.float32)

    def feed(self, wave: np.ndarray) -> list[tuple[str, int]]:
        """("start" | "end", sample) for each change this audio brings."""
        self.pending = np.concatenate([self.pending, wave.astype(np.float32, copy=False)])
        changes = []
        whole = len(self.pending) // WINDOW * WINDOW
        for start in range(0, whole, WINDOW):
            change = self.vad(torch.from_numpy(self.pending[start:start + WINDOW].copy()))
            if change:
                kind = "start" if "start" in change else "end"
                changes.append((kind, int(change[kind])))
        self.pending = self.pending[whole:]
        return changes
