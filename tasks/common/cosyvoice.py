"""CosyVoice 2 (FunAudioLLM's code, weights from a local CosyVoice2-0.5B directory, GPU advised),
loaded one way for both of its uses: zero-shot TTS (`tasks.build.tts`) and S3 units -> audio
(`tasks.units.decoder`)."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch

from omniforge.errors import InputError
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.tasks.common.audio_ops import resample


class CosyVoiceUnavailable(InputError, RuntimeError):
    """CosyVoice 2 cannot run here (weights or code missing); the message says which and how to fix it."""


def require_model_dir(model_dir: str | None, setting: str) -> None:
    """`setting` names the config field that should point at the weights."""
    if not model_dir or not Path(model_dir).is_dir():
        raise CosyVoiceUnavailable(f"CosyVoice 2 weights not found: set {setting} to a local CosyVoice2-0.5B "
                                   f"directory (got {model_dir!r})")


def load_cosyvoice2(model_dir: str | None, setting: str, fp16: bool = False):
    """FunAudioLLM's `CosyVoice2` from `model_dir`."""
    require_model_dir(model_dir, setting)
    try:
        from cosyvoice.cli.cosyvoice import CosyVoice2
    except ImportError as err:
        raise CosyVoiceUnavailable("the CosyVoice 2 code is not importable: install FunAudioLLM/CosyVoice (and its "
                                   f"third_party/Matcha-TTS) on PYTHONPATH ({err})") from err
    return CosyVoice2(model_dir, load_jit=False, load_trt=False, fp16=fp16)


def prompt_16k(path: str) -> torch.Tensor:
    """A prompt wav as CosyVoice's frontend wants it: mono, 16 kHz, shape (1, samples)."""
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(resample(wave.mean(axis=1), rate, INPUT_SAMPLE_RATE))[None]  # its frontend is Whisper-rate too
