"""A checkpoint says given sentences through its own TTS LM (`omniforge speak`, and the plain-sentence
eval set of `omniforge evaluate`): the sentence is the answer's text, streamed through the TTS LM
and the units -> audio decoder as an answer is, then heard by ASR. What a TTS LM learned shows on
sentences it never trained on, and only there."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniforge.errors import InputError
from omniforge.tasks.common.asr import word_error_rate
from omniforge.tasks.evaluate.metrics import Scorer, contains_answer, mean_known
from omniforge.tasks.evaluate.streaming_engine import StreamingEngine


class SentenceFileError(InputError):
    """A sentences file that cannot be read; the message names the line and the field."""


@dataclass
class Sentence:
    id: str
    text: str
    answers: list[str] = field(default_factory=list)  # key words a listener must hear


@dataclass
class SpokenSentence:
    id: str
    text: str
    answers: list[str]
    transcript: str | None
    asr_wer: float | None
    key_word_heard: bool | None
    units: int
    audio_seconds: float
    compute_seconds: float
    length_guard: bool   # the speech ended at the length guard, not at the TTS LM's end-of-speech

    def row(self) -> dict:
        return asdict(self)


def read_sentences(path: str) -> list[Sentence]:
    """One sentence per line (.txt), or JSONL records with `text` and optional `id` and `answers`
    (key words). Blank lines are skipped; a bad line is an error naming it and the field."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    sentences = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not path.endswith(".jsonl"):
            sentences.append(Sentence(f"line-{number}", line.strip()))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SentenceFileError(f"{path} line {number}: not JSON ({err.msg})") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SentenceFileError(f"{path} line {number}: field 'text' must be a non-empty string")
        answers = record.get("answers", [])
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise SentenceFileError(f"{path} line {number}: field 'answers' must be a list of strings")
        sentences.append(Sentence(str(record.get("id", f"line-{number}")), text.strip(), answers))
    if not sentences:
        raise SentenceFileError(f"{path}: no sentence in it")
    return sentences


def speak_sentences(engine: StreamingEngine, sentences: list[Sentence], scorer: Scorer | None,
                    llm_states: bool = True, on_spoken=None) -> list[SpokenSentence]:
    """Say each sentence (see `StreamingEngine.say`); with a scorer, hear it back (ASR-WER against
    the sentence, and whether a key word was heard). `on_spoken(result, trace)` after each."""
    guard = engine.settings.max_units_per_text_token
    results = []
    for sentence in sentences:
        trace = engine.say(sentence.text, llm_states)
        transcript = scorer.transcribe(trace) if scorer is not None else None
        read = len(engine.chat.text_ids(sentence.text))
        result = SpokenSentence(
            sentence.id, sentence.text, sentence.answers, transcript,
            None if transcript is None else round(word_error_rate(sentence.text, transcript), 4),
            None if transcript is None else contains_answer(sentence.answers, transcript),
            len(trace.units), round(trace.audio_seconds, 3), round(trace.compute_seconds, 3),
            guard is not None and len(trace.units) >= int(guard * read))
        results.append(result)
        if on_spoken is not None:
            on_spoken(result, trace)
    return results


def sentence_metrics(results: list[SpokenSentence]) -> dict:
    """Means over the spoken sentences (None where nothing was heard)."""
    return {"sentences": len(results), "sentence_asr_wer": mean_known([r.asr_wer for r in results]),
            "sentence_key_word_heard": mean_known([r.key_word_heard for r in results]),
            "sentence_length_guard": mean_known([r.length_guard for r in results]),
            "sentence_audio_seconds": mean_known([r.audio_seconds for r in results])}

