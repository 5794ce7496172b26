"""Audio in Parquet, the Hugging Face way: a struct of encoded `bytes` and `path`.

Encoded with soundfile (the CPU torch here has no working torchaudio/torchcodec). Kept free of
heavy imports: every Ray worker that reads or writes audio imports this module.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str = "FLAC") -> bytes:
    """Float wave in [-1, 1] -> encoded bytes (16-bit FLAC by default: lossless, about half of WAV)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Encoded bytes (any format soundfile reads) -> mono float32 wave and its sample rate."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


def audio_seconds(data: bytes) -> float | None:
    """An encoded file's duration from its header, without decoding it; None when soundfile cannot
    read it as audio."""
    try:
        return float(sf.info(io.BytesIO(data)).duration)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None


def audio_cell(data: bytes | None, path: str | None = None) -> dict | None:
    return None if data is None else {"bytes": data, "path": path}
