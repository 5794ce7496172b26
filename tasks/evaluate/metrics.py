"""Score a model on spoken questions while it streams (SPEC.md, "Evaluation"): S2T and S2S accuracy
(reference answer contained in the text answer / in the ASR transcript of the speech answer),
ASR-WER between the two, DNSMOS, latency and real-time factor. A metric that cannot be computed
here is reported with the reason, never as a number."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.tasks.common.asr import AsrUnavailable, Transcriber, normalize_words, word_error_rate
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.mos import UNAVAILABLE as MOS_UNAVAILABLE
from omniforge.tasks.common.mos import dnsmos
from omniforge.errors import InputError
from omniforge.tasks.common.records import Dialogue, Reject, Turn
from omniforge.tasks.evaluate.eval_sets import input_wave
from omniforge.tasks.evaluate.streaming_engine import AnswerTrace, StreamingEngine


@dataclass
class TurnResult:
    item_id: str
    turn: int
    question: str
    references: list[str]
    text: str
    transcript: str | None
    s2t_correct: bool | None
    s2s_correct: bool | None
    asr_wer: float | None
    dnsmos: float | None
    latency: float | None
    first_text: float | None
    text_end: float | None
    compute_seconds: float
    audio_seconds: float

    def row(self) -> dict:
        return asdict(self)


def contains_answer(references: list[str], response: str) -> bool | None:
    """The paper's accuracy: some reference answer appears in the response (normalized words)."""
    if not references:
        return None
    said = f" {normalize_words(response)} "
    return any(f" {normalize_words(ref)} " in said for ref in references if normalize_words(ref))


class Scorer:
    """ASR and MOS where they can run; the reasons where they cannot."""

    def __init__(self, asr_model: str | None, mos: bool, mos_limit: int | None = None) -> None:
        self.skipped: dict[str, str] = {}
        self.mos_limit, self.mos_scored = mos_limit, 0
        self.asr = None
        if asr_model is None:
            self.skipped["asr"] = "no ASR model configured (evaluate.asr_model)"
        else:
            try:
                self.asr = Transcriber(asr_model)
            except AsrUnavailable as err:
                self.skipped["asr"] = str(err)
        self.mos = mos
        if not mos:
            self.skipped["dnsmos"] = "MOS estimation turned off (evaluate.mos)"

    def transcribe(self, trace: AnswerTrace) -> str | None:
        if self.asr is None or trace.audio_seconds == 0:
            return None
        return self.asr.transcribe(resample(trace.audio, trace.sample_rate, INPUT_SAMPLE_RATE))

    def mos_score(self, trace: AnswerTrace) -> float | None:
        """DNSMOS of a speech answer (the first `mos_limit` ones: it costs seconds per answer)."""
        if not self.mos or trace.audio_seconds == 0 or self.mos_scored == self.mos_limit:
            return None
        self.mos_scored += 1
        score = dnsmos(resample(trace.audio, trace.sample_rate, INPUT_SAMPLE_RATE))
        if score is None:
            self.skipped["dnsmos"] = MOS_UNAVAILABLE
        return score


def evaluate_items(engine: StreamingEngine, items: list[Dialogue], scorer: Scorer,
                   on_answer=None) -> tuple[list[TurnResult], list[Reject]]:
    """Answer every user turn with the model's own earlier answers as history. An item the model
    cannot take (a question longer than its speech encoder accepts, say) is a reject naming its turn,
    with none of its answers counted, and the evaluation goes on."""
    results, rejects = [], []
    for item in items:
        answered: list[tuple[TurnResult, AnswerTrace]] = []
        history: list[tuple[str, str]] = []
        waves: list[np.ndarray] = []
        try:
            for index, (turn, references) in enumerate(item.questions()):
                answered.append(_answer_turn(engine, scorer, item.id, index, turn, references, history, waves))
        except (ValueError, InputError) as err:  # what the model refuses to take (too long, undecodable)
            rejects.append(Reject(item.id, f"user turn {index}", "unanswerable", f"{type(err).__name__}: {err}"))
            continue
        for result, trace in answered:
            results.append(result)
            if on_answer is not None:
                on_answer(result, trace)
    return results, rejects


def _answer_turn(engine: StreamingEngine, scorer: Scorer, item_id: str, index: int, turn: Turn,
                 references: list[str], history: list[tuple[str, str]],
                 waves: list[np.ndarray]) -> tuple[TurnResult, AnswerTrace]:
    """Answer one question after `history` (both grow by this turn) and score the answer."""
    history.append(("user", turn.text))
    waves.append(input_wave(turn))
    trace = engine.answer(history, waves)
    history.append(("assistant", trace.text))
    transcript = scorer.transcribe(trace)
    result = TurnResult(
        item_id, index, turn.text, references, trace.text, transcript,
        contains_answer(references, trace.text),
        None if transcript is None else contains_answer(references, transcript),
        None if transcript is None or not trace.text else round(word_error_rate(trace.text, transcript), 4),
        scorer.mos_score(trace), trace.latency, trace.first("text"), trace.text_end,
        trace.compute_seconds, trace.audio_seconds)
    return result, trace


def mean_known(values: list) -> float | None:
    """The mean of the values that are known (not None), rounded; None when none is."""
    known = [float(v) for v in values if v is not None]
    return round(float(np.mean(known)), 4) if known else None


def summarize(results: list[TurnResult], skipped: dict[str, str]) -> dict:
    """Metrics with, for each one that could not be computed, the reason."""
    latencies = [r.latency for r in results if r.latency is not None]
    audio = sum(r.audio_seconds for r in results)
    metrics = {
        "answers": len(results),
        "s2t_accuracy": mean_known([r.s2t_correct for r in results]),
        "s2s_accuracy": mean_known([r.s2s_correct for r in results]),
        "asr_wer": mean_known([r.asr_wer for r in results]),
        "dnsmos": mean_known([r.dnsmos for r in results]),
        "dnsmos_answers": sum(r.dnsmos is not None for r in results),
        "latency_p50": round(float(np.percentile(latencies, 50)), 4) if latencies else None,
        "latency_p90": round(float(np.percentile(latencies, 90)), 4) if latencies else None,
        "latency_max": round(float(max(latencies)), 4) if latencies else None,
        "real_time_factor": round(sum(r.compute_seconds for r in results) / audio, 4) if audio else None,
        "audio_before_text_end": mean_known([r.latency < r.text_end for r in results
                                        if r.latency is not None and r.text_end is not None]),
    }
    reasons = {}
    for name in ("s2s_accuracy", "asr_wer"):
        if metrics[name] is None and "asr" in skipped:
            reasons[name] = skipped["asr"]
    if metrics["dnsmos"] is None and "dnsmos" in skipped:
        reasons["dnsmos"] = skipped["dnsmos"]
    for name, value in metrics.items():
        if value is None and name not in reasons:
            reasons[name] = "no answer produced the inputs this metric needs (e.g. no audio or no references)"
    return {"metrics": metrics, "not_computed": reasons}
