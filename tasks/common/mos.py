"""Speech quality without a listener: DNSMOS (P.835) overall quality, from the ONNX model that ships in
`speechmos`. The model is run here directly: one session per scorer with a set thread count, and only
the overall score (speechmos's own `run` also runs the P.808 model and makes a session on every
thread of the machine; same score)."""

from __future__ import annotations

import functools
import os

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE

UNAVAILABLE = "DNSMOS unavailable: the speechmos package (and onnxruntime) cannot be imported"
WINDOW_S = 9.01          # the model hears 9.01 s windows
HOP_S = 1.0              # a longer clip is scored every second and averaged
OVERALL_FIT = (-0.06766283, 1.11546468, 0.04602535)  # DNSMOS's polynomial from raw to calibrated overall MOS


class Dnsmos:
    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort
        import speechmos.dnsmos

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        model = os.path.join(os.path.dirname(speechmos.dnsmos.__file__), "dnsmos_models", "sig_bak_ovr.onnx")
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def score(self, wave: np.ndarray) -> float:
        """Overall quality (1-5) of a wave at the input rate; a clip shorter than a window is doubled
        until it fills one, as DNSMOS's own scoring does."""
        audio = np.clip(wave, -1.0, 1.0).astype(np.float32)  # what a listener hears is clipped anyway
        window = int(WINDOW_S * INPUT_SAMPLE_RATE)
        if len(audio) == 0:
            raise ValueError("DNSMOS of an empty wave")
        while len(audio) < window:
            audio = np.concatenate([audio, audio])
        hops = int(np.floor(len(audio) / INPUT_SAMPLE_RATE) - WINDOW_S) + 1
        raw = [self.session.run(None, {"input_1": audio[i * INPUT_SAMPLE_RATE: i * INPUT_SAMPLE_RATE + window][None]})[0][0][2]
               for i in range(hops)]
        return float(np.mean(np.poly1d(OVERALL_FIT)(np.array(raw, dtype=np.float64))))


@functools.cache
def _default_scorer() -> Dnsmos | None:
    try:
        return Dnsmos()
    except ImportError:
        return None


def dnsmos(wave: np.ndarray) -> float | None:
    """DNSMOS overall quality of a wave at the input rate; None if it cannot run here."""
    scorer = _default_scorer()
    return None if scorer is None else scorer.score(wave)
