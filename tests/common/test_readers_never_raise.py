"""Property: every source reader and eval-set reader, fed arbitrary bytes, arbitrary JSON or mutated
valid records, accounts for each record (built, or rejected with a field and a reason) and never raises."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniforge.config.build import SourceConfig
from omniforge.config.corpus import CorpusSourceConfig
from omniforge.config.units import VocalNetImportConfig
from omniforge.tasks.build.sources import load_corpus_source, load_source, parse_records
from omniforge.tasks.common.records import MediaRoots, RecordError
from omniforge.tasks.evaluate.eval_sets import load_questions_file
from omniforge.tasks.units.vocalnet_import import item_rows

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
# words the parsers look for, so arbitrary records often reach deep into them
keys = st.sampled_from(["id", "conversations", "messages", "conversation", "from", "role", "value", "content",
                        "text", "speech", "answer", "answers", "units", "bytes", "array", "sampling_rate", "path"])
roles = st.sampled_from(["human", "gpt", "user", "assistant", "system", "alien", "", None, 3])
record_like = st.recursive(
    json_values | roles,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys | st.text(max_size=6), inner, max_size=5),
    max_leaves=30)

VALID = [
    {"id": "sharegpt", "conversations": [{"from": "human", "value": "Where is Paris?"},
                                         {"from": "gpt", "value": "Paris is in France."}]},
    {"id": "openai", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                                  {"role": "assistant", "content": "Hello."}]},
    {"id": "omni", "conversation": [{"from": "human", "text": "Hi?", "speech": "q.wav"}, {"from": "gpt", "text": "Hello."}]},
]


@st.composite
def mutated_records(draw):
    """A valid record with a few edits: a key dropped, a value replaced, a turn removed or duplicated."""
    record = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 3))):
        turns = next(v for k, v in record.items() if isinstance(v, list)) if any(
            isinstance(v, list) for v in record.values()) else None
        action = draw(st.sampled_from(["drop", "replace", "turn_value", "turn_drop", "turn_copy"]))
        if action in ("drop", "replace") and record:
            key = draw(st.sampled_from(sorted(record)))
            if action == "drop":
                record.pop(key)
            else:
                record[key] = draw(record_like)
        elif turns and isinstance(turns[0], dict):
            index = draw(st.integers(0, len(turns) - 1))
            # only the first turn is known to be a dict (a replaced value may be a list of anything)
            if action == "turn_value" and isinstance(turns[index], dict) and turns[index]:
                turns[index][draw(st.sampled_from(sorted(turns[index])))] = draw(record_like)
            elif action == "turn_drop":
                turns.pop(index)
            elif action == "turn_copy":
                turns.insert(index, json.loads(json.dumps(turns[index])))
    return record


def non_blank_lines(data: bytes) -> int:
    count = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            count += bool(raw.decode("utf-8-sig" if number == 1 else "utf-8").strip())
        except UnicodeDecodeError:
            count += 1
    return count


@PROPERTY
@given(data=st.binary(max_size=300) | st.lists(record_like | mutated_records(), max_size=5).map(
    lambda records: "\n".join(json.dumps(r) for r in records).encode()))
def test_jsonl_sources_account_for_every_line(tmp_path, data):
    path = tmp_path / "source.jsonl"
    path.write_bytes(data)
    batch = load_source(SourceConfig(kind="jsonl", path=str(path)))
    assert len(batch.dialogues) + len(batch.rejects) == non_blank_lines(data)
    assert all(r.field and r.reason for r in batch.rejects)
    corpus = load_corpus_source(CorpusSourceConfig(kind="jsonl", path=str(path)))
    assert len(corpus.rejects) <= non_blank_lines(data)


@PROPERTY
@given(records=st.lists(record_like | mutated_records(), max_size=6))
def test_parsed_records_are_dialogues_or_rejects(tmp_path, records):
    sf.write(tmp_path / "q.wav", np.zeros(1600, dtype=np.float32), 16000)
    batch = parse_records([(f"row {i}", r) for i, r in enumerate(records)], MediaRoots((str(tmp_path),)))
    assert len(batch.dialogues) + len(batch.rejects) == len(records)
    for dialogue in batch.dialogues:
        assert dialogue.turns and dialogue.turns[0].role == "user"


@PROPERTY
@given(data=st.binary(max_size=300) | st.lists(record_like | mutated_records(), max_size=5).map(json.dumps).map(
    str.encode), suffix=st.sampled_from([".json", ".jsonl"]))
def test_questions_files_account_for_every_item(tmp_path, data, suffix):
    sf.write(tmp_path / "q.wav", np.zeros(1600, dtype=np.float32), 16000)
    path = tmp_path / f"questions{suffix}"
    path.write_bytes(data)
    loaded = load_questions_file(str(path))
    assert all(r.field and r.reason for r in loaded.rejects)
    if suffix == ".json":
        try:
            parsed = json.loads(data.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            parsed = None
        expected = len(parsed) if isinstance(parsed, list) else 1
        assert len(loaded.items) + len(loaded.rejects) == expected


@PROPERTY
@given(item=record_like | mutated_records())
def test_vocalnet_items_are_rows_or_record_errors(tmp_path, item):
    try:
        item_rows(item, str(tmp_path), VocalNetImportConfig(), 25)
    except RecordError as err:
        assert err.field and err.reason
