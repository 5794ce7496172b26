"""The level checks every synthesized utterance passes before the quality gate hears it."""

from __future__ import annotations

import numpy as np

from omniforge.config.build import ValidationConfig
from omniforge.tasks.common.audio_ops import clipped_ratio, silence_ratio


class AudioRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        self.figures: dict = {}  # the quality gate's figures of the rejected audio, when it was measured


def check_audio(wave: np.ndarray, rate: int, expected_rate: int, config: ValidationConfig) -> None:
    """Raise AudioRejected naming the first failed check."""
    if rate != expected_rate:
        raise AudioRejected("bad_sample_rate", f"{rate} Hz, expected {expected_rate} Hz")
    if not np.all(np.isfinite(wave)):
        raise AudioRejected("bad_audio", "non-finite samples")
    duration = len(wave) / rate
    if duration < config.min_duration_s:
        raise AudioRejected("too_short", f"{duration:.2f} s < {config.min_duration_s} s")
    if duration > config.max_duration_s:
        raise AudioRejected("too_long", f"{duration:.2f} s > {config.max_duration_s} s")
    silent = silence_ratio(wave, rate)
    if silent > config.max_silence_ratio:
        raise AudioRejected("silent", f"{silent:.0%} of frames are silent")
    clipped = clipped_ratio(wave)
    if clipped > config.max_clipped_ratio:
        raise AudioRejected("clipped", f"{clipped:.2%} of samples are clipped")
