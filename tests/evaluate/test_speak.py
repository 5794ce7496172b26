"""`omniforge speak`: a checkpoint says given sentences through its own TTS LM and decoder, to wav
files, heard back by ASR; speaking never trains a decoder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import soundfile as sf

from omniforge.config.schema import StoreConfig
from omniforge.storage import Kind, store_from_config
from omniforge.tasks.evaluate.speak import SentenceFileError, read_sentences
from tests.training_data import TINY_DECODER

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
SPOKEN = ("train.name=spoken", "evaluate.checkpoint=checkpoint/spoken", "evaluate.max_speech_tokens=80",
          "evaluate.max_units_per_text_token=6")


@pytest.fixture(scope="module")
def spoken_checkpoint(data_store, tmp_path_factory):
    from omniforge.tasks.train import steps as train_steps
    from tests.training_data import tiny_training

    config = tiny_training(data_store, str(tmp_path_factory.mktemp("tb")), extra=SPOKEN)
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    return train_steps.run_stages_here(config, start, speech, units)[-1]


def omniforge(data_store: str, *args: str, overrides: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    sets = [f"store.url={data_store}", "units.kmeans.k=32", *TINY_DECODER, *SPOKEN, *overrides]
    return subprocess.run([sys.executable, "-m", "omniforge.cli", *args, "--config", "configs/demo.yaml"]
                          + [a for s in sets for a in ("--set", s)], capture_output=True, text=True, timeout=600)


def test_speak_says_text_and_a_sentence_file_into_wavs_heard_back(data_store, spoken_checkpoint, tmp_path):
    sentences = tmp_path / "unseen.jsonl"
    sentences.write_text(json.dumps({"id": "denmark", "text": "The capital of Denmark is Copenhagen.",
                                     "answers": ["Copenhagen"]}) + "\n\n", encoding="utf-8")
    out = tmp_path / "said"
    run = omniforge(data_store, "speak", "--text", "The capital of France is Paris.", "--file", str(sentences),
                    "--out", str(out), "--text-only")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (out / "spoken.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["text-1", "denmark"]
    for row in rows:
        audio, rate = sf.read(out / f"{row['id']}.wav")
        assert rate == 22050 and len(audio) / rate == pytest.approx(row["audio_seconds"], abs=0.01)
        assert row["units"] > 0 and row["transcript"] is not None and row["asr_wer"] is not None
        assert row["units"] <= 80  # evaluate's limits apply
    assert rows[1]["answers"] == ["Copenhagen"] and isinstance(rows[1]["key_word_heard"], bool)
    assert rows[0]["key_word_heard"] is None  # a plain --text has no key word
    metrics = json.loads(run.stdout[run.stdout.index("{"):run.stdout.rindex("}") + 1])
    assert metrics["checkpoint"] == spoken_checkpoint and metrics["sentences"] == 2 and not metrics["llm_states"]
    assert "text-1:" in run.stdout and "denmark:" in run.stdout  # each sentence reported as it is said


def test_speaking_with_a_decoder_never_trained_names_the_command_and_trains_none(data_store, spoken_checkpoint,
                                                                                  tmp_path):
    store = store_from_config(StoreConfig(url=data_store))
    decoders = store.versions(Kind.decoder, "demo")
    run = omniforge(data_store, "speak", "--text", "Hello there.", "--out", str(tmp_path / "x"),
                    overrides=("units.decoder.steps=7",))  # settings no decoder was trained with
    assert run.returncode == 2
    assert run.stderr.startswith("error: no units -> audio decoder for tokenizer/demo") and \
        "omniforge tokenize-units" in run.stderr
    assert store.versions(Kind.decoder, "demo") == decoders


def test_a_bad_sentence_file_names_its_line_and_field(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "fine."}\n{"id": 2, "answers": ["x"]}\n', encoding="utf-8")
    with pytest.raises(SentenceFileError, match="line 2: field 'text'"):
        read_sentences(str(path))
    path.write_text('{"text": "fine.", "answers": "x"}\n', encoding="utf-8")
    with pytest.raises(SentenceFileError, match="line 1: field 'answers'"):
        read_sentences(str(path))
    text = tmp_path / "s.txt"
    text.write_text("One sentence.\n\nAnother one.\n", encoding="utf-8")
    assert [s.text for s in read_sentences(str(text))] == ["One sentence.", "Another one."]
