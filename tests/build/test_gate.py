"""The quality gate on real speech: Piper and espeak-ng audio heard back by Whisper tiny.en, measured
for speaking rate and speaker similarity (Resemblyzer), said again at another tempo when it fails."""

from __future__ import annotations

import numpy as np
import pytest

from omniforge.config import load_pipeline_config
from omniforge.config.build import BuildConfig, QualityGateConfig, VoiceConfig
from omniforge.flows.build_dialogues import build_dialogues
from omniforge.storage import store_from_config
from omniforge.storage.audio import encode_audio
from omniforge.tasks.build.checks import AudioRejected
from omniforge.tasks.build.gate import REASONS as GATE_REASONS
from omniforge.tasks.build.plan import Utterance
from omniforge.tasks.build.publish import kept_utterances
from omniforge.tasks.build.steps import gate_markdown
from omniforge.tasks.build.synthesis import SynthesisWorker, worker_args
from omniforge.tasks.build.tts import espeak_available
from omniforge.tasks.build.voices import Voice
from omniforge.tasks.common.audio_ops import resample

JOE = VoiceConfig()
TEXT = "The capital of France is Paris, and its currency is the euro."


def worker_with(**gate) -> SynthesisWorker:
    config = BuildConfig(gate=QualityGateConfig(**gate))
    return SynthesisWorker(*worker_args(config))


@pytest.fixture(scope="module")
def worker() -> SynthesisWorker:
    return worker_with()  # the default gate


def job(text: str, audio: bytes | None = None, voice: VoiceConfig = JOE) -> dict:
    return {"key": "k", "segments": [text], "voice": voice.model_dump(), "provided_audio": audio}


def spoken(worker: SynthesisWorker, text: str, voice: VoiceConfig = JOE) -> np.ndarray:
    wave, rate = worker._say([text], voice)
    return resample(wave, rate, worker.sample_rate)


def wav(wave: np.ndarray) -> bytes:
    return encode_audio(wave, SynthesisWorker.sample_rate)


def test_good_speech_passes_with_its_figures(worker):
    row = worker.one(job(TEXT))
    assert row["audio"] is not None and row["error_reason"] is None and row["attempts"] == 1
    assert row["asr_wer"] <= 0.2 and "paris" in row["asr_text"].lower()
    low, high = worker.gate_config.speaking_rate
    assert low < row["speaking_rate"] < high
    assert row["speaker_similarity"] > 0.85  # its own voice's reference


def test_numbers_heard_as_digits_match_the_spoken_text(worker):
    """The text says numbers in words; Whisper writes digits: the gate spells them out before the WER."""
    row = worker.one(job("It costs one thousand two hundred dollars and weighs twelve kilograms."))
    assert row["audio"] is not None and row["asr_wer"] <= 0.2, row["asr_text"]


def test_utterances_heard_together_get_their_own_words(worker):
    """A worker's batch is heard several utterances to a Whisper window: each gets its own words, none of
    its neighbours'; one not heard as its text there is heard alone by `measure`."""
    texts = ["The capital of France is Paris.", "Bananas are yellow when they are ripe.",
             "My brother plays the violin every evening.", "The train to Berlin leaves at noon."]
    keys = ["paris", "bananas", "violin", "berlin"]
    heard = worker.gate.transcriber.transcribe_many([spoken(worker, text) for text in texts])
    for words, key in zip(heard, keys, strict=True):
        assert [k for k in keys if k in words.lower()] == [key], heard
    blurred = worker.gate.measure(spoken(worker, texts[0]), texts[0], None, heard="Bananas are yellow.")
    assert "paris" in blurred.asr_text.lower() and blurred.asr_wer <= worker.gate_config.max_wer
    rows = worker.run([{**job(text), "key": str(i)} for i, text in enumerate(texts)])
    for row, key in zip(rows, keys, strict=True):
        assert row["audio"] is not None and row["attempts"] == 1 and key in row["asr_text"].lower()


def test_skipped_looped_and_silent_speech_are_rejected_with_their_reason(worker):
    skipped = worker.one(job(TEXT, wav(spoken(worker, "The capital of France."))))
    assert skipped["error_reason"] == "asr_mismatch" and skipped["audio"] is None
    assert skipped["asr_wer"] > 0.5 and skipped["attempts"] == 1  # provided audio cannot be said again

    looped = np.tile(spoken(worker, TEXT), 4)
    assert worker.one(job(TEXT, wav(looped)))["error_reason"] == "asr_mismatch"
    without_asr = worker_with(max_wer=None)
    slow = without_asr.one(job(TEXT, wav(looped)))
    assert slow["error_reason"] == "too_slow" and slow["speaking_rate"] < 6

    silent = worker.one(job(TEXT, wav(np.zeros(2 * SynthesisWorker.sample_rate, np.float32))))
    assert silent["error_reason"] == "silent"

    hour = encode_audio(np.zeros(3600 * 8000, np.float32), 8000)  # 100 KB of FLAC: refused by its header
    assert worker.one(job(TEXT, hour))["error_reason"] == "too_long"


def test_another_voice_is_rejected(worker):
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    other = spoken(worker, TEXT, VoiceConfig(backend="espeak", voice="en-us+f3"))
    figures = worker.gate.measure(other, TEXT, JOE)
    with pytest.raises(AudioRejected) as rejected:
        worker.gate.check(figures)
    assert rejected.value.reason == "wrong_voice" and figures.speaker_similarity < 0.7
    assert worker.gate.measure(spoken(worker, TEXT), TEXT, JOE).speaker_similarity > 0.85


def test_a_failed_utterance_is_said_again_at_another_tempo(worker):
    rate = worker.one(job(TEXT))["speaking_rate"]
    # too fast as chosen; the first retry (tempo 1 - tempo_step) is slow enough
    retried = worker_with(speaking_rate=(rate * 0.8, rate * 0.97), tempo_step=0.25).one(job(TEXT))
    assert retried["error_reason"] is None and retried["attempts"] == 2
    assert retried["speaking_rate"] < rate * 0.97
    # no tempo within the tries passes: rejected with the last try's figures
    hopeless = worker_with(speaking_rate=(rate * 0.4, rate * 0.5), resynthesis=2).one(job(TEXT))
    assert hopeless["error_reason"] == "too_fast" and hopeless["attempts"] == 3 and hopeless["audio"] is None
    assert hopeless["speaking_rate"] > rate * 0.5


def test_a_dialogue_with_a_rejected_turn_is_cut_or_dropped():
    def turn(dialogue: str, index: int) -> Utterance:
        role = "user" if index % 2 == 0 else "assistant"
        return Utterance(f"{dialogue}/{index}", dialogue, index, role, role, "text", "text", ("text",),
                         Voice(role, JOE), key=f"{dialogue}/{index}")

    utterances = [turn("a", i) for i in range(6)] + [turn("b", i) for i in range(2)]
    failed = {"a/4": "asr_mismatch", "b/1": "wrong_voice"}  # a's third question, b's only answer
    results = {u.key: {"audio": None, "error_reason": failed[u.key], "error": "x"} if u.key in failed else
               {"audio": b"..."} for u in utterances}
    kept, rejects = kept_utterances(utterances, results, "cut")
    assert [u.utterance_id for u in kept] == ["a/0", "a/1", "a/2", "a/3"]  # b has no answered question left
    assert {(r.record, r.field, r.reason) for r in rejects} == {("a", "turns[4].audio", "asr_mismatch"),
                                                                ("b", "turns[1].audio", "wrong_voice")}
    assert "keeps its first 4 turns" in next(r.detail for r in rejects if r.record == "a")
    kept, rejects = kept_utterances(utterances, results, "drop")
    assert kept == [] and len(rejects) == 2


@pytest.mark.usefixtures("prefect_server")
def test_the_build_stores_the_gate_figures_and_cuts_failed_dialogues(tmp_path):
    """A narrow speaking-rate range makes the real gate fail some turns of the demo's dialogues: every
    kept turn has its figures in the speech version's quality table, every failure is a reject naming its
    turn, cut dialogues keep only answered turns, and the summary counts what the table holds."""
    config = load_pipeline_config("configs/demo.yaml", [
        f"store.url={tmp_path / 'store'}", "build.source.demo.dialogues=8", "build.source.demo.max_user_turns=3",
        "build.synthesis.workers=1", "build.tts.users.size=4", "ray.num_cpus=2",
        "build.gate.speaking_rate=[14.5, 17.5]", "build.gate.resynthesis=1"])
    summary = build_dialogues(config)
    store = store_from_config(config.store)
    speech = store.manifest(summary["speech_version"])
    table = store.read_table(speech).to_pylist()
    quality = {r["utterance_id"]: r for r in store.read_table(speech, "quality").to_pylist()}
    assert set(quality) == {r["utterance_id"] for r in table}
    assert all(14.5 <= q["speaking_rate"] <= 17.5 and q["asr_wer"] is not None and q["speaker_similarity"] > 0.7
               for q in quality.values())

    rejects = store.read_table(store.manifest(summary["dialogues_version"]), "rejects").to_pylist()
    gated = [r for r in rejects if r["reason"] in GATE_REASONS]
    assert any(r["reason"] in ("too_fast", "too_slow") for r in gated)
    assert all(r["field"].startswith("turns[") for r in gated)
    for reject in gated:  # a cut dialogue keeps the turns before the failed one, ending with an answer
        failed_turn = int(reject["field"][len("turns["):].split("]")[0])
        kept = sorted(r["turn_index"] for r in table if r["dialogue_id"] == reject["record"])
        assert kept == list(range(len(kept))) and len(kept) <= failed_turn and len(kept) % 2 == 0

    gate = summary["gate"]
    assert gate["resynthesized"] == sum(q["attempts"] > 1 for q in quality.values())
    assert sum(gate["rejected"].values()) == len(gated)
    assert gate["figures"]["speaking_rate"]["n"] == len(quality)
    markdown = "\n".join(gate_markdown(gate))
    assert "### speaking_rate" in markdown and "### asr_wer" in markdown and "#" * 10 in markdown
