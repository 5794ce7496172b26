"""Sources: the three JSONL layouts, HF datasets, the demo generator; bad records name their field."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import soundfile as sf

from omniforge.config.build import SourceConfig
from omniforge.tasks.build.sources import demo_dialogues, load_source


def write_jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def test_the_three_layouts_parse_to_the_same_dialogue(tmp_path):
    wav = tmp_path / "wav" / "q.wav"
    wav.parent.mkdir()
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "sharegpt", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]},
        {"id": "openai", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                                      {"role": "assistant", "content": "Hello."}]},
        {"id": "omni", "conversation": [{"from": "human", "text": "Hi?", "speech": "wav/q.wav"},
                                        {"from": "gpt", "text": "Hello."}]},
    ])
    batch = load_source(SourceConfig(kind="jsonl", path=path))
    assert batch.rejects == []
    assert [d.id for d in batch.dialogues] == ["sharegpt", "openai", "omni"]
    for dialogue in batch.dialogues:
        assert [(t.role, t.text) for t in dialogue.turns] == [("user", "Hi?"), ("assistant", "Hello.")]
    assert batch.dialogues[2].turns[0].audio == wav.read_bytes()  # existing speech is used as is
    assert batch.dialogues[0].turns[0].audio is None


def test_bad_records_become_rejects_naming_record_and_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "ok", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
        {"id": "alien", "conversations": [{"from": "alien", "value": "x"}]},
        {"id": "empty", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "  "}]},
        {"id": "order", "conversations": [{"from": "gpt", "value": "A."}, {"from": "human", "value": "Q?"}]},
        {"id": "nolist", "conversations": "text"},
        {"id": "nowav", "conversation": [{"from": "human", "text": "Q", "speech": "wav/none.wav"},
                                         {"from": "gpt", "text": "A"}]},
        {"title": "no dialogue here"},
        "{not json",
        {"id": "ok", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
    ])
    batch = load_source(SourceConfig(kind="jsonl", path=path))
    assert [d.id for d in batch.dialogues] == ["ok"]
    got = [(r.record, r.field, r.reason) for r in batch.rejects]
    assert got == [
        ("alien (line 2)", "conversations[0].from", "unknown_role"),
        ("empty (line 3)", "conversations[1].value", "empty_turn"),
        ("order (line 4)", "conversations[0].from", "bad_turn_order"),
        ("nolist (line 5)", "conversations", "malformed_record"),
        ("nowav (line 6)", "conversation[0].speech", "missing_audio"),
        ("line 7", "<record>", "unknown_layout"),
        ("line 8", "<json>", "malformed_json"),
        ("ok", "id", "duplicate_id"),
    ]


def test_limit_samples_reproducibly_and_keeps_order(tmp_path):
    records = [{"id": f"d{i}", "messages": [{"role": "user", "content": f"Q{i}"},
                                           {"role": "assistant", "content": "A"}]} for i in range(50)]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    first = [d.id for d in load_source(SourceConfig(kind="jsonl", path=path, limit=10, seed=3)).dialogues]
    again = [d.id for d in load_source(SourceConfig(kind="jsonl", path=path, limit=10, seed=3)).dialogues]
    other = [d.id for d in load_source(SourceConfig(kind="jsonl", path=path, limit=10, seed=4)).dialogues]
    assert first == again != other and len(first) == 10
    assert first == sorted(first, key=lambda x: int(x[1:]))


def test_hf_dataset_source_with_existing_audio(tmp_path):
    wave = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    rows = [{"id": "h1", "conversation": [
        {"from": "human", "text": "What is this?", "speech": {"array": wave, "sampling_rate": 16000}},
        {"from": "gpt", "text": "A tone.", "speech": None}]}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    batch = load_source(SourceConfig(kind="hf", path=str(tmp_path / "hf")))
    assert batch.rejects == [] and batch.dialogues[0].id == "h1"
    user = batch.dialogues[0].turns[0]
    decoded, rate = sf.read(__import__("io").BytesIO(user.audio), dtype="float32")
    assert rate == 16000 and np.allclose(decoded, wave, atol=1e-4)


def test_demo_generator_is_stable_when_grown():
    small = demo_dialogues(SourceConfig().demo.model_copy(update={"dialogues": 5}), seed=0)
    large = demo_dialogues(SourceConfig().demo.model_copy(update={"dialogues": 8}), seed=0)
    assert large[:5] == small
    for record in large:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)


def test_missing_path_is_a_config_error():
    with pytest.raises(ValueError, match="source.path is required"):
        SourceConfig(kind="jsonl")


def test_input_guards_are_not_part_of_the_build_recipe():
    """Guards and retries decide how input is read, not what is built (a change they cause shows in the
    content hash): changing them, or adding them to an older store's config, keeps its versions."""
    from omniforge.config import load_pipeline_config
    from omniforge.tasks.build.steps import build_recipe, corpus_recipe

    plain = load_pipeline_config("configs/demo.yaml", [])
    guarded = load_pipeline_config("configs/demo.yaml", [
        "build.source.media.max_bytes=4096", "build.source.media.allow_urls=true", "build.text.max_raw_chars=50000",
        "build.text.rewrite.retries=9", "build.text.rewrite.timeout_s=5"])
    assert build_recipe(guarded) == build_recipe(plain) and corpus_recipe(guarded) == corpus_recipe(plain)
    other_text = load_pipeline_config("configs/demo.yaml", ["build.text.max_turn_chars=900"])
    assert build_recipe(other_text) != build_recipe(plain)  # what decides the content still counts
