"""Streaming evaluation: event order and real streaming, metrics on hand-made cases, eval-set
layouts and their errors, a missing ASR model reported as such, and the whole evaluate flow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from omniforge.model.streaming import GenerationSettings
from omniforge.model.unit_vocoder import MelGrid, UnitToMel, UnitToMelSettings
from omniforge.tasks.evaluate.eval_sets import EvalSetError, input_wave, load_eval_set, load_questions_file
from omniforge.tasks.evaluate.metrics import Scorer, TurnResult, contains_answer, summarize
from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
from omniforge.tasks.train.text_tokenizer import ChatFormat, train_bpe
from omniforge.tasks.units.decoders.learned import UnitAudioDecoder, load_hifigan
from tests.tiny_model import tiny_model


def _engine(max_text_tokens: int, max_speech_tokens: int = 400) -> tuple[StreamingEngine, int]:
    tokenizer = train_bpe(["the capital of france is paris"] * 4, 300)
    chat = ChatFormat(tokenizer, "Be brief.")
    model = tiny_model(seed=3, encoder_config=dict(
        model_type="whisper", num_mel_bins=80, d_model=32, encoder_layers=1, encoder_attention_heads=2,
        encoder_ffn_dim=64, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2,
        decoder_ffn_dim=32, vocab_size=10, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
        llm_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
        tts_config=dict(model_type="qwen2", vocab_size=len(tokenizer) + 21, hidden_size=24, intermediate_size=48,
                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        text_vocab_size=len(tokenizer), speech_token_id=chat.speech_token_id, eos_token_id=chat.eos_token_id)
    # the LLM's last hidden state is zeroed, so every logit ties and greedy picks token 0, never EOS:
    # the text runs to max_text_tokens (a long answer)
    with torch.no_grad():
        model.llm.model.norm.weight.zero_()
    torch.manual_seed(0)
    unit_to_mel = UnitToMel(UnitToMelSettings(vocab_size=20, embed_dim=8, channels=16, layers=1, kernel=3), MelGrid())
    decoder = UnitAudioDecoder(unit_to_mel, load_hifigan("universal"))
    settings = GenerationSettings(max_text_tokens=max_text_tokens, max_speech_tokens=max_speech_tokens)
    return StreamingEngine(model, chat, decoder, settings), chat.eos_token_id


@pytest.mark.slow
def test_events_are_ordered_and_audio_starts_before_the_text_ends():
    engine, _ = _engine(max_text_tokens=60)
    wave = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    trace = engine.answer([("user", "")], [wave])
    kinds = [e.kind for e in trace.events]
    assert kinds.count("text") == 60 and kinds[-1] == "end"
    times = [e.seconds for e in trace.events]
    assert times == sorted(times)
    assert trace.first("text") < trace.first("units") < trace.first("audio") < trace.events[-1].seconds
    assert trace.latency < trace.text_end  # streaming is real: speech before the text is finished
    assert sum(e.size for e in trace.events if e.kind == "units") == len(trace.units)
    assert len(trace.audio) == engine.decoder.grid.samples(len(trace.units))


def test_metrics_on_hand_made_answers():
    assert contains_answer(["Paris"], "The capital of France is Paris.") is True
    assert contains_answer(["Paris"], "It is Parisian.") is False
    assert contains_answer([], "anything") is None

    def result(text, transcript, latency, text_end):
        return TurnResult("i", 0, "q", ["Paris"], text, transcript, contains_answer(["Paris"], text),
                          contains_answer(["Paris"], transcript), None, None, latency, 0.01, text_end, 1.0, 2.0)

    results = [result("the capital is paris", "the capital is paris", 0.2, 0.5),
               result("the capital is paris", "the capital is rome", 0.4, 0.3),
               result("it is rome", "it is rome", 0.6, 0.9), result("paris", "paris", 0.8, 1.0)]
    from omniforge.tasks.common.asr import word_error_rate

    for r in results:
        r.asr_wer = word_error_rate(r.text, r.transcript)
    metrics = summarize(results, {})["metrics"]
    assert metrics["s2t_accuracy"] == 0.75 and metrics["s2s_accuracy"] == 0.5
    assert metrics["asr_wer"] == pytest.approx(0.0625)  # one substitution in four words, in one of four answers
    assert metrics["latency_p50"] == pytest.approx(0.5) and metrics["latency_max"] == 0.8
    assert metrics["real_time_factor"] == pytest.approx(0.5)
    assert metrics["audio_before_text_end"] == 0.75


def test_a_missing_asr_model_is_a_reason_not_a_number(tmp_path):
    scorer = Scorer(str(tmp_path / "no-such-model"), mos=False)
    assert scorer.asr is None and "no-such-model" in scorer.skipped["asr"]
    results = [TurnResult("i", 0, "q", ["Paris"], "paris", None, True, None, None, None, 0.2, 0.1, 0.3, 1.0, 1.0)]
    summary = summarize(results, scorer.skipped)
    assert summary["metrics"]["s2s_accuracy"] is None and summary["metrics"]["asr_wer"] is None
    assert "no-such-model" in summary["not_computed"]["s2s_accuracy"]
    assert "turned off" in summary["not_computed"]["dnsmos"]


def test_questions_json_with_any_wav_encoding(tmp_path):
    (tmp_path / "wav").mkdir()
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "wav" / "a.wav", np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1) * 0.5, 44100,
             subtype="FLOAT")
    sf.write(tmp_path / "wav" / "b.wav", (np.sin(2 * np.pi * 220 * t[:8000]) * 0.5), 8000, subtype="PCM_16")
    questions = [{"id": "q1", "conversation": [{"from": "human", "text": "capital?", "speech": "wav/a.wav"},
                                               {"from": "gpt", "text": "Paris"},
                                               {"from": "human", "text": "and?", "speech": "wav/b.wav"}],
                  "answers": ["Rome", "Roma"]}]
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    [item] = load_questions_file(str(tmp_path / "questions.json")).items
    waves = [input_wave(turn) for turn, _ in item.questions()]
    assert [len(wave) for wave in waves] == [16000, 16000]
    assert all(wave.dtype == np.float32 and wave.ndim == 1 for wave in waves)
    assert [references for _, references in item.questions()] == [["Paris"], ["Rome", "Roma"]]

    # an item without a wav for a question is left out, naming it and the field; the others stay
    questions.append({"id": "q2", "conversation": [{"from": "human", "text": "and?", "speech": "wav/b.wav"}]})
    questions[0]["conversation"][2].pop("speech")
    (tmp_path / "bad.json").write_text(json.dumps(questions))
    loaded = load_questions_file(str(tmp_path / "bad.json"))
    assert [i.id for i in loaded.items] == ["q2"]
    assert [(r.record, r.field, r.reason) for r in loaded.rejects] == [
        ("bad.json item 'q1'", "conversation[2].speech", "missing_audio")]
    (tmp_path / "missing.jsonl").write_text(json.dumps({"id": "x", "conversation": [
        {"from": "human", "speech": "wav/none.wav"}]}) + "\n")
    with pytest.raises(EvalSetError, match=r"missing\.jsonl: no usable item \(missing\.jsonl item 'x': "
                                           r"conversation\[0\]\.speech: missing_audio: wav/none.wav not found"):
        load_eval_set(str(tmp_path / "missing.jsonl"), None)


def test_llama_omni2_questions_json_evaluates_from_its_repository_root(tmp_path, monkeypatch):
    """Its repository ships examples/questions.json naming "examples/wav/helpful_base_0.wav": relative
    to the repository's root, where its scripts run."""
    repo = tmp_path / "LLaMA-Omni2"
    (repo / "examples" / "wav").mkdir(parents=True)
    sf.write(repo / "examples" / "wav" / "helpful_base_0.wav", np.zeros(8000, dtype=np.float32), 16000)
    items = [{"id": "helpful_base_0", "conversation": [
        {"from": "human", "text": "Who is Larry Page?", "speech": "examples/wav/helpful_base_0.wav"}]}]
    (repo / "examples" / "questions.json").write_text(json.dumps(items, indent=4))
    monkeypatch.chdir(tmp_path)  # elsewhere, the path is found under neither the file's folder nor here
    loaded = load_questions_file(str(repo / "examples" / "questions.json"))
    assert loaded.items == [] and loaded.rejects[0].reason == "missing_audio"
    assert "examples/wav/helpful_base_0.wav not found (tried " in loaded.rejects[0].detail
    assert str(tmp_path) in loaded.rejects[0].detail and str(repo / "examples") in loaded.rejects[0].detail
    found = load_questions_file(str(repo / "examples" / "questions.json"), root=str(repo))  # a root the user names
    assert [i.id for i in found.items] == ["helpful_base_0"]
    monkeypatch.chdir(repo)
    [item] = load_eval_set("examples/questions.json", None).items
    assert len(input_wave(item.turns[0])) == 8000


def test_demo_answers_are_scored_on_their_facts():
    from omniforge.config.build import DemoSourceConfig
    from omniforge.tasks.build.sources import demo_dialogues, parse_records

    batch = parse_records([("demo", r) for r in demo_dialogues(DemoSourceConfig(dialogues=6, max_user_turns=2), 7)])
    for dialogue in batch.dialogues:
        for (question, references), answer in zip(dialogue.questions(), dialogue.turns[1::2]):
            [fact] = references
            assert fact in answer.text and fact != answer.text  # "Paris", not the whole sentence
    assert contains_answer(["rupee"], "the currency of india is the rupee") and not contains_answer(["rupee"], "the rue")


def test_the_html_report_plays_each_kept_answer():
    from omniforge.storage.audio import encode_audio
    from omniforge.tasks.evaluate.report import html_report, wav_name

    results = [TurnResult(f"item{i}", 0, "q", ["Paris"], "Paris.", "paris", True, True, 0.0, None, 0.2, 0.1, 0.3, 1.0,
                          1.0) for i in range(3)]
    wave = np.zeros(1600, dtype=np.float32)
    kept = {wav_name(r): encode_audio(wave, 16000, "WAV") for r in results[:2]}
    page = html_report("t", summarize(results, {}), results, {}, kept)
    assert page.count("<audio controls") == 2 and page.count("data:audio/wav;base64,") == 2


def test_sampled_speech_is_reproducible_with_its_seed():
    from omniforge.config.evaluate import GenerationLimits
    from omniforge.tasks.evaluate.steps import generation_settings

    engine, _ = _engine(max_text_tokens=12)
    wave = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    engine.settings = generation_settings(GenerationLimits(max_text_tokens=12, max_speech_tokens=60,
                                                           speech_temperature=1.0))
    heard = []
    for seed in (5, 5, 6):
        engine.generator = torch.Generator().manual_seed(seed)
        heard.append(engine.answer([("user", "")], [wave]).units)
    assert heard[0] == heard[1] and heard[0] != heard[2]
    assert not generation_settings(GenerationLimits()).speech.do_sample


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_answers_from_slot_caches_set_in_the_config_are_the_eager_caches_answers(temperature):
    """`slot_cache` in an evaluate/serve section moves decoding to fixed-size caches (the GPU's graph-
    replayed path; eager here): the engine answers with the same text and units, greedy or sampled
    with the same seed; and a server is refused fewer slots than conversations."""
    from omniforge.config.evaluate import GenerationLimits, SlotCacheConfig
    from omniforge.config.serve import ServeConfig
    from omniforge.tasks.evaluate.steps import generation_settings

    engine, _ = _engine(max_text_tokens=12)
    wave = np.random.default_rng(2).normal(0, 0.1, 16000).astype(np.float32)
    answers = []
    for slot_cache in (None, SlotCacheConfig(slots=2, llm_length=256, tts_length=256)):
        engine.settings = generation_settings(GenerationLimits(max_text_tokens=12, max_speech_tokens=60,
                                                               speech_temperature=temperature, slot_cache=slot_cache))
        engine.generator = torch.Generator().manual_seed(5)
        answer = engine.answer([("user", "")], [wave])
        answers.append((answer.text, answer.units))
    assert engine.settings.slot_cache is not None and answers[0][1]
    assert answers[0] == answers[1]
    with pytest.raises(ValueError, match="max_conversations"):
        ServeConfig(max_conversations=4, slot_cache=SlotCacheConfig(slots=2))


def test_an_item_the_model_cannot_take_is_a_reject_and_the_evaluation_goes_on():
    """A 35 s question (the speech encoder takes 30 s) between two answerable items: it is a reject
    naming its turn and why, none of its turns are counted, both others are answered."""
    from omniforge.storage.audio import encode_audio
    from omniforge.tasks.common.records import Dialogue, Turn
    from omniforge.tasks.evaluate.metrics import evaluate_items

    engine, _ = _engine(max_text_tokens=3, max_speech_tokens=20)  # short answers: only the reject is at stake
    rng = np.random.default_rng(0)

    def question(seconds: float) -> Turn:
        return Turn("user", "q", encode_audio(rng.normal(0, 0.1, int(16000 * seconds)).astype(np.float32), 16000))

    items = [Dialogue("short", [question(1.0), Turn("assistant", "a")]),
             Dialogue("../too long", [question(1.0), Turn("assistant", "a"), question(35.0)]),
             Dialogue("after", [question(2.0)])]
    answered = []
    results, rejects = evaluate_items(engine, items, Scorer(None, mos=False), lambda r, t: answered.append(r.item_id))
    assert [r.item_id for r in results] == answered == ["short", "after"]
    [reject] = rejects
    assert (reject.record, reject.field, reject.reason) == ("../too long", "user turn 1", "unanswerable")
    assert "too long" in reject.detail


def test_any_item_id_names_a_file_of_its_own():
    from omniforge.tasks.evaluate.report import file_name_for

    ids = ["q1", "../x", "a/b", "a_b", "", "x" * 500, "é", "con:1", ".hidden"]
    names = [file_name_for(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(n and len(n) <= 90 and "/" not in n and not n.startswith(".") for n in names)
    assert file_name_for("q1") == "q1"


def test_where_the_model_answers_is_not_in_the_eval_key_but_a_new_dtype_is():
    """A GPU answers as the CPU does (so an evaluation made on one is found from the other); bf16
    weights answer otherwise; float32, the dtype every earlier evaluation had, keeps their keys."""
    from omniforge.config import load_pipeline_config
    from omniforge.storage import Kind, Manifest
    from omniforge.tasks.evaluate.steps import eval_key

    checkpoint, decoder = Manifest(kind=Kind.checkpoint, name="demo", version=3), Manifest(kind=Kind.decoder,
                                                                                           name="demo", version=1)

    def key(*settings: str) -> str:
        return eval_key(load_pipeline_config("configs/demo.yaml", list(settings)), checkpoint, decoder)

    assert key() == key("evaluate.device=cuda") == key("evaluate.slot_cache={slots: 2}")
    assert key("evaluate.dtype=bfloat16") != key()
    assert key("evaluate.seed=5") != key()
