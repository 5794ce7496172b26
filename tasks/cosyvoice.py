"""CosyVoice 2 (FunAudioLLM's code, weights from a local CosyVoice2-0.5B directory, GPU advised):
loaded one way for both of its uses here, zero-shot TTS (tasks.tts) and S3 units -> audio
(`CosyVoice2UnitDecoder`).

The decoder is CosyVoice 2's chunk-aware causal flow matching (S3 tokens -> 80-bin mel, the voice
given by a prompt wav's CAM++ speaker embedding) and its HiFT vocoder, 24 kHz, driven the way
LLaMA-Omni 2's released decoder drives it: no prompt tokens, only the speaker embedding. It streams
on CosyVoice 2's own schedule: a chunk is decoded once `hop` new tokens plus the flow's look-ahead
are known, and the vocoder's cache cross-fades the chunk edges, so (unlike the offline default's)
its chunks do not add up exactly to the one-shot decode.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from omniforge.config.units import CosyVoice2DecoderConfig
from tasks.audio_ops import resample

PROMPT_RATE = 16000
MODEL_DIR_SETTING = "units.decoder.cosyvoice2.model_dir"


class CosyVoiceUnavailable(RuntimeError):
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
    return torch.from_numpy(resample(wave.mean(axis=1), rate, PROMPT_RATE))[None]


def require_cosyvoice2_files(settings: CosyVoice2DecoderConfig) -> None:
    """Fail early, naming the setting, when the decoder's weights or prompt are not where they are said to be."""
    require_model_dir(settings.model_dir, MODEL_DIR_SETTING)
    if not settings.prompt_wav or not Path(settings.prompt_wav).is_file():
        raise CosyVoiceUnavailable("set units.decoder.cosyvoice2.prompt_wav to a wav of the voice to speak with "
                                   f"(got {settings.prompt_wav!r})")


class CosyVoice2UnitDecoder:
    """S3 units -> 24 kHz audio, one-shot or streamed (the `UnitDecoder` interface)."""

    def __init__(self, settings: CosyVoice2DecoderConfig) -> None:
        require_cosyvoice2_files(settings)
        self.cosyvoice = load_cosyvoice2(settings.model_dir, MODEL_DIR_SETTING, settings.fp16)
        self.model = self.cosyvoice.model  # CosyVoice2Model: flow, hift, token2wav and its per-session caches
        self.embedding = self.cosyvoice.frontend._extract_spk_embedding(prompt_16k(settings.prompt_wav))
        self.hop = settings.hop_units or self.model.token_hop_len

    @property
    def sample_rate(self) -> int:
        return self.cosyvoice.sample_rate

    def lookahead_units(self) -> int:
        """Units needed before the first chunk can be decoded."""
        return self.hop + self.model.flow.pre_lookahead_len

    @contextmanager
    def _session(self) -> Iterator[str]:
        """CosyVoice keeps the vocoder's cross-fade cache per session id."""
        session = str(uuid.uuid4())
        self.model.hift_cache_dict[session] = None
        try:
            yield session
        finally:
            self.model.hift_cache_dict.pop(session, None)

    @torch.no_grad()
    def _token2wav(self, units: list[int], offset: int, session: str, finalize: bool) -> np.ndarray:
        speech = self.model.token2wav(token=torch.tensor([units], dtype=torch.int32),
                                      prompt_token=torch.zeros(1, 0, dtype=torch.int32), prompt_feat=torch.zeros(1, 0, 80),
                                      embedding=self.embedding, token_offset=offset, uuid=session,
                                      stream=not finalize, finalize=finalize)
        return speech[0].float().cpu().numpy()

    def decode(self, units: list[int]) -> np.ndarray:
        with self._session() as session:
            return self._token2wav(list(units), 0, session, finalize=True)

    def stream(self, chunks: Iterable[list[int]]) -> Iterator[np.ndarray]:
        with self._session() as session:
            units: list[int] = []
            offset = 0
            for chunk in chunks:
                units.extend(chunk)
                while len(units) - offset >= self.lookahead_units():
                    yield self._token2wav(units[: offset + self.lookahead_units()], offset, session, finalize=False)
                    offset += self.hop
            if units:
                yield self._token2wav(units, offset, session, finalize=True)
