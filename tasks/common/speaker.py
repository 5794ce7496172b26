"""Who is speaking, without a listener: Resemblyzer's speaker encoder (its weights ship in the wheel),
one 256-dim unit vector per utterance; two utterances of one voice score a high cosine similarity."""

from __future__ import annotations

import warnings

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE


class SpeakerEncoder:
    def __init__(self) -> None:
        with warnings.catch_warnings():  # webrtcvad, which resemblyzer imports, warns about pkg_resources
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder
            from resemblyzer.hparams import sampling_rate
        if sampling_rate != INPUT_SAMPLE_RATE:
            raise RuntimeError(f"resemblyzer hears {sampling_rate} Hz, our audio is {INPUT_SAMPLE_RATE} Hz")
        self.encoder = VoiceEncoder("cpu", verbose=False)

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """A wave at the input rate -> its speaker embedding (unit norm)."""
        return self.encoder.embed_utterance(wave.astype(np.float32, copy=False))


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
