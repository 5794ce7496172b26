"""Every table schema the store holds, in one place.

The speech table carries the `huggingface` feature metadata, so `datasets`, pyarrow, pandas, DuckDB
and Ray Data all read the shards as they are. Building it imports `datasets` (about a second), which
only the writers of speech versions need, so it is made on first use (`speech_schema()`); the other
schemas are plain Arrow and cost nothing to import (unit workers import this module).
"""

from __future__ import annotations

import functools

import pyarrow as pa

REJECT_SCHEMA = pa.schema([("record", pa.string()), ("field", pa.string()), ("reason", pa.string()),
                           ("detail", pa.string())])

DIALOGUE_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("turn_index", pa.int32()), ("role", pa.string()), ("speaker", pa.string()),
    ("original_text", pa.string()), ("text", pa.string()), ("segments", pa.list_(pa.string())),
    ("truncated", pa.bool_()), ("key", pa.string()),
])

UNITS_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("dialogue_id", pa.string()), ("turn_index", pa.int32()),
    ("role", pa.string()), ("key", pa.string()), ("units", pa.list_(pa.int32())), ("n_units", pa.int32()),
    ("duration", pa.float32()),
])
UNIT_ROW_FIELDS = ("utterance_id", "dialogue_id", "turn_index", "role", "key", "duration")  # copied from speech rows
# units.align: when each word of the turn's text is said (tasks/units/alignment.py), for aligned read-write
WORD_FIELDS = [("word_chars", pa.list_(pa.int32())), ("word_starts", pa.list_(pa.float32())),
               ("word_ends", pa.list_(pa.float32()))]
ALIGNED_UNITS_SCHEMA = pa.schema([*UNITS_SCHEMA, *(pa.field(name, kind) for name, kind in WORD_FIELDS)])

# what the build's quality gate finds of an utterance (tasks/build/gate.py), besides what the ASR heard
QUALITY_FIGURES = [("attempts", pa.int32()), ("asr_wer", pa.float32()), ("dnsmos", pa.float32()),
                   ("speaking_rate", pa.float32()), ("speaker_similarity", pa.float32())]

# the build's cache of finished utterances (by content key), outside any version
UTTERANCE_CACHE_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("audio", pa.binary()),
    ("audio_native", pa.binary()),
    ("native_sampling_rate", pa.int32()),
    ("duration", pa.float32()),
    ("backend", pa.string()),
    ("error_reason", pa.string()),
    ("error", pa.string()),
    ("asr_text", pa.string()),
    *QUALITY_FIGURES,
])

# a speech version's quality gate figures, one row per utterance it holds
QUALITY_SCHEMA = pa.schema([("utterance_id", pa.string()), ("key", pa.string()), ("asr_text", pa.string()),
                            *QUALITY_FIGURES])

# dialogues written by `generate-dialogues` from instructions: a JSONL file of records in the OpenAI messages
# layout (what the build reads), and its cache of finished generations by content key (record: the JSON line)
GENERATED_DIALOGUES_FILE = "dialogues.jsonl"
GENERATED_CACHE_SCHEMA = pa.schema([("key", pa.string()), ("record", pa.string()), ("error_reason", pa.string()),
                                    ("error", pa.string())])

ANSWERS_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("turn", pa.int64()), ("question", pa.string()), ("references", pa.list_(pa.string())),
    ("text", pa.string()), ("transcript", pa.string()), ("s2t_correct", pa.bool_()), ("s2s_correct", pa.bool_()),
    ("asr_wer", pa.float64()), ("dnsmos", pa.float64()), ("latency", pa.float64()), ("first_text", pa.float64()),
    ("text_end", pa.float64()), ("compute_seconds", pa.float64()), ("audio_seconds", pa.float64()),
])


@functools.cache
def speech_schema() -> pa.Schema:
    import datasets

    return datasets.Features({
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
        "answers": datasets.Sequence(datasets.Value("string")),  # an answer's facts (evaluation references)
    }).arrow_schema
