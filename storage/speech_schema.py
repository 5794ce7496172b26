"""The speech table's schema, with the `huggingface` feature metadata, so `datasets`, pyarrow,
pandas, DuckDB and Ray Data all read the shards as they are.

A module of its own because building it imports `datasets` (about a second), which only the
writers of speech versions need.
"""

from __future__ import annotations

import datasets
import pyarrow as pa

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
