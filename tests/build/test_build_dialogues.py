"""The build_dialogues flow, for real: Prefect flow runs, a local Ray, Piper/espeak audio."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest

from omniforge.config import load_pipeline_config
from omniforge.flows.build_dialogues import build_dialogues
from omniforge.storage import store_from_config
from omniforge.storage.audio import decode_audio
from omniforge.tasks.build.steps import load_and_plan
from omniforge.tasks.common.asr import Transcriber, word_error_rate

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = [
    "build.synthesis.workers=1",
    "build.synthesis.batch_size=4",
    "build.tts.users.size=4",
    "ray.num_cpus=2",
]


def config_for(tmp_path, *overrides, store="store"):
    return load_pipeline_config("configs/demo.yaml", SMALL + [f"store.url={tmp_path / store}", *overrides])


def test_rows_match_input_turns_and_rejects_carry_reasons(tmp_path):
    """A JSONL file as people hold them: good records, numbers and markdown to normalize, a Latin-1
    line, broken JSON, an unknown role, unspeakable text. The good ones build, the rest are rejects."""
    source = tmp_path / "dialogues.jsonl"
    records = [
        {"id": "good", "conversations": [{"from": "human", "value": "How far is the moon?"},
                                         {"from": "gpt", "value": "About **384,400 km** away."},
                                         {"from": "human", "value": "What does the trip cost?"},
                                         {"from": "gpt", "value": "It costs $1,200, about 3.5% of the budget, due on "
                                                                  "Jan. 5, 2024."}]},
        {"id": "list", "messages": [{"role": "user", "content": "What should I pack?"},
                                    {"role": "assistant", "content": "Pack these:\n- 2 liters of water\n- 3 apples"}]},
        {"id": "code", "messages": [{"role": "user", "content": "Show me code."},
                                    {"role": "assistant", "content": "```python\nprint(1)\n```"}]},
        {"id": "math", "messages": [{"role": "user", "content": "Solve it."},
                                    {"role": "assistant", "content": "Solve $x^2 = 4$ for x."}]},
        {"id": "chinese", "messages": [{"role": "user", "content": "首都是哪里？"}, {"role": "assistant", "content": "北京。"}]},
        {"id": "short", "messages": [{"role": "user", "content": "Please say hello to me."}, {"role": "assistant", "content": "Hi."}]},
        {"id": "alien", "messages": [{"role": "martian", "content": "Hello?"}]},
    ]
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
    lines.insert(2, json.dumps({"id": "latin1", "messages": [{"role": "user", "content": "Café?"}]},
                               ensure_ascii=False).encode("latin-1"))
    lines.insert(4, b'{"id": "broken", "messages": [')
    source.write_bytes(b"\n".join(lines) + b"\n")
    # the gate's ASR is off here: tiny.en hears "What should I pack?" in this pool's espeak-ng voice as "I'll
    # show that back." (the gate has its own tests, test_gate.py); the level checks still reject "Hi."
    config = config_for(tmp_path, "build.source.kind=jsonl", f"build.source.path={source}",
                        "build.validation.min_duration_s=0.55", "build.gate.max_wer=null")
    summary = build_dialogues(config)

    store = store_from_config(config.store)
    speech = store.manifest(summary["speech_version"])
    table = store.read_table(speech)
    assert table.column("utterance_id").to_pylist() == ["good/0", "good/1", "good/2", "good/3", "list/0", "list/1"]
    assert table.column("text").to_pylist() == [
        "How far is the moon?", "About three hundred eighty four thousand four hundred kilometers away.",
        "What does the trip cost?", "It costs one thousand two hundred dollars, about three point five percent of "
        "the budget, due on january fifth, twenty twenty four.",
        "What should I pack?", "Pack these: two liters of water. three apples."]
    assert table.column("role").to_pylist() == ["user", "assistant"] * 3
    speakers = table.column("speaker").to_pylist()
    assert speakers[1] == speakers[3] == "assistant" and speakers[0] == speakers[2] != "assistant"
    assert set(table.column("sampling_rate").to_pylist()) == {16000}
    assert set(table.column("native_sampling_rate").to_pylist()) == {22050}

    dialogues = store.manifest(summary["dialogues_version"])
    rejects = {r["record"]: (r["field"], r["reason"]) for r in store.read_table(dialogues, "rejects").to_pylist()}
    assert rejects == {"line 3": ("<line>", "bad_encoding"), "line 5": ("<json>", "malformed_json"),
                       "code": ("turns[1].text", "code"), "math": ("turns[1].text", "math"),
                       "chinese": ("turns[0].text", "unsupported_language"), "short": ("turns[1].audio", "too_short"),
                       "alien (line 9)": ("messages[0].role", "unknown_role")}
    assert summary["rejects_by_reason"] == {"bad_encoding": 1, "malformed_json": 1, "code": 1, "math": 1,
                                            "unsupported_language": 1, "too_short": 1, "unknown_role": 1}
    assert speech.parents[0].ref() == dialogues.ref() and speech.flow_run_id

    # the shards load with HF datasets, and a turn's audio says its text (a turn without numbers, which
    # Whisper writes as digits; found by id: the files' order in `data_files` is not the table's)
    hf = datasets.load_dataset("parquet", data_files=store.shard_uris(speech), split="train")
    row = hf[hf["utterance_id"].index("good/2")]
    samples = row["audio"].get_all_samples()  # datasets decodes it (torchcodec)
    wave, rate = samples.data[0].numpy(), samples.sample_rate
    assert rate == 16000 and abs(len(wave) / rate - row["duration"]) < 0.01
    assert word_error_rate(row["text"], Transcriber("tiny.en").transcribe(wave)) <= 0.25


def test_rerun_and_incremental_build_synthesize_only_what_is_new(tmp_path):
    first = build_dialogues(config_for(tmp_path, "build.source.demo.dialogues=6"))
    assert first["published"] and first["speech_version"] == "speech/demo@1"
    planned = load_and_plan(config_for(tmp_path, "build.source.demo.dialogues=6"))
    assert first["synthesized_this_run"] == len(list(planned.jobs()))

    again = build_dialogues(config_for(tmp_path, "build.source.demo.dialogues=6", "build.synthesis.workers=2"))
    assert not again["published"] and again["synthesized_this_run"] == 0 and again["speech_version"] == "speech/demo@1"

    grown = config_for(tmp_path, "build.source.demo.dialogues=8", "build.planning.spill_dialogues=3")  # 3 parts
    old_keys = {j["key"] for j in load_and_plan(config_for(tmp_path, "build.source.demo.dialogues=6")).jobs()}
    new_keys = {j["key"] for j in load_and_plan(grown).jobs()} - old_keys
    second = build_dialogues(grown)
    assert second["speech_version"] == "speech/demo@2"
    assert second["synthesized_this_run"] == len(new_keys) > 0
    assert second["reused_rows"] == first["turns"]

    store = store_from_config(grown.store)
    v1, v2 = store.manifest("speech/demo@1"), store.manifest("speech/demo@2")
    assert {s.path for s in v1.tables["data"].shards} <= {s.path for s in v2.tables["data"].shards}
    assert [str(p.ref()) for p in v2.parents] == ["dialogues/demo@2", "speech/demo@1"]
    assert store.read_table(v2).num_rows == second["turns"] and store.verify(v2.ref()) == []

    # back to the first 6: rows left, so v2's shards cannot be referenced; the 6 dialogues' rows are copied
    # from them (nothing synthesized), and the version holds exactly what the first build held, in full shards
    shrunk = build_dialogues(config_for(tmp_path, "build.source.demo.dialogues=6", "build.planning.spill_dialogues=4",
                                        "store.rows_per_shard=5"))
    assert shrunk["speech_version"] == "speech/demo@3" and shrunk["synthesized_this_run"] == 0
    assert shrunk["content_hash"] == first["content_hash"] and shrunk["reused_rows"] == 0
    v3 = store.manifest("speech/demo@3")
    assert [str(p.ref()) for p in v3.parents] == ["dialogues/demo@3"] and store.verify(v3.ref()) == []
    sizes = [shard.rows for shard in v3.tables["data"].shards]
    assert sum(sizes) == first["turns"] and set(sizes[:-1]) == {5} and 0 < sizes[-1] <= 5
    rows = {name: store.read_table(v).sort_by("utterance_id").drop_columns(["audio", "audio_native"])
            for name, v in (("v1", v1), ("v3", v3))}
    assert rows["v3"].equals(rows["v1"])
    assert store.read_table(v3, "quality").num_rows == first["turns"]
