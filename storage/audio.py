"""Audio in Parquet, the Hugging Face way: a struct of encoded `bytes` and `path`.

The speech table's schema carries the `huggingface` feature metadata, so `datasets`, pyarrow,
pandas, DuckDB and Ray Data all read the shards as they are. Audio is decoded with soundfile (the
CPU torch here has no working torchaudio/torchcodec).
"""

from __future__ import annotations

import io

import datasets
import numpy as np
import pyarrow as pa
import soundfile as sf

SPEECH_FEATURES = datasets.Features(
    {
        "utterance_id": datasets.Value("string"),
        "dialogue_id": datasets.Value("string"),
        "turn_index": datasets.Value("int32"),
        "role": datasets.Value("string"),
        "speaker": datasets.Value("string"),
        "text": datasets.Value("string"),
        "audio": datasets.Audio(),
        "sampling_rate": datasets.Value("int32"),
        "duration": datasets.Value("float32"),
        "audio_native": datasets.Audio(),
        "native_sampling_rate": datasets.Value("int32"),
        "backend": datasets.Value("string"),
        "key": datasets.Value("string"),
    }
)
SPEECH_SCHEMA: pa.Schema = SPEECH_FEATURES.arrow_schema


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str = "FLAC") -> bytes:
    """Float wave in [-1, 1] -> encoded bytes (16-bit FLAC by default: lossless, about half of WAV)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Encoded bytes (any format soundfile reads) -> mono float32 wave and its sample rate."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


def audio_cell(data: bytes | None, path: str | None = None) -> dict | None:
    return None if data is None else {"bytes": data, "path": path}
