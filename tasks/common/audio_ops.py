"""Wave-level operations: resampling (also used for pitch shifts) and the validation measures."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

MAX_RATIO_DENOMINATOR = 1000


def resample(wave: np.ndarray, source_rate: float, target_rate: int) -> np.ndarray:
    """Polyphase resampling. `source_rate` may be fractional: treating a wave as if recorded at
    rate*f and resampling it shifts pitch by f and shortens it by f (speed perturbation)."""
    if abs(source_rate - target_rate) < 1e-6:
        return wave.astype(np.float32, copy=False)
    ratio = Fraction(target_rate / source_rate).limit_denominator(MAX_RATIO_DENOMINATOR)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


class AudioResampler:
    """One stream's audio from one rate to another, chunk by chunk, without seams between chunks
    (soxr's streaming resampler keeps its filter state); `None` flushes what it holds back."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        import soxr

        self.stream = None if source_rate == target_rate else soxr.ResampleStream(source_rate, target_rate, 1,
                                                                                  dtype="float32")

    def __call__(self, chunk: np.ndarray | None) -> np.ndarray:
        if self.stream is None:
            return np.zeros(0, np.float32) if chunk is None else chunk
        if chunk is None:
            return self.stream.resample_chunk(np.zeros(0, np.float32), last=True)
        return self.stream.resample_chunk(chunk.astype(np.float32, copy=False))


def semitones_to_factor(semitones: float) -> float:
    return float(2.0 ** (semitones / 12.0))


def silence_ratio(wave: np.ndarray, rate: int, frame_ms: float = 25.0, floor_db: float = -40.0,
                  absolute_floor_db: float = -70.0) -> float:
    """Share of frames more than |floor_db| below the loudest frame, or below `absolute_floor_db` of
    full scale (so a wave of zeros or near-zeros is all silence)."""
    size = max(1, int(rate * frame_ms / 1000))
    frames = len(wave) // size
    if frames == 0:
        return 1.0
    energy = np.sqrt(np.mean(wave[: frames * size].reshape(frames, size) ** 2, axis=1)) + 1e-10
    level = 20 * np.log10(energy / energy.max())
    return float(np.mean((level < floor_db) | (20 * np.log10(energy) < absolute_floor_db)))


def clipped_ratio(wave: np.ndarray, threshold: float = 0.999) -> float:
    return float(np.mean(np.abs(wave) >= threshold)) if len(wave) else 0.0


def join_segments(waves: list[np.ndarray], rate: float, pause_s: float) -> np.ndarray:
    """Concatenate separately synthesized segments of one turn with a short pause between them."""
    if len(waves) == 1:
        return waves[0]
    gap = np.zeros(int(rate * pause_s), dtype=np.float32)
    parts = [p for w in waves for p in (w, gap)][:-1]
    return np.concatenate(parts).astype(np.float32)
