"""Speech quality without a listener: DNSMOS, whose ONNX models ship in `speechmos`."""

from __future__ import annotations

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE

UNAVAILABLE = "DNSMOS unavailable: the speechmos package (and librosa) cannot be imported"


def dnsmos(wave: np.ndarray) -> float | None:
    """DNSMOS overall quality of a wave at the input rate; None if it cannot run here."""
    try:
        from speechmos import dnsmos as scorer
    except ImportError:
        return None
    # DNSMOS rejects samples outside [-1, 1]; what a listener would hear is clipped anyway
    return float(scorer.run(np.clip(wave, -1.0, 1.0).astype(np.float32), sr=INPUT_SAMPLE_RATE)["ovrl_mos"])
