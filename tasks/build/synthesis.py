"""Synthesis on Ray: long-lived workers, each owning its TTS models, fed batches of utterances.

One actor per worker loads its engines once (a Piper voice takes ~1 s to load; an utterance
~0.1 s to say), so per-utterance overhead stays at one Ray call per batch. Results stream back
to the driver, which checkpoints them into the utterance cache as they arrive.

Only deterministic outcomes are remembered: audio (with the quality gate's figures), or a reject of
the audio itself (too short, clipped, not saying its text, the wrong voice) after the gate's tries. Any other failure (a timeout, out of memory, a bug) is retried with backoff
and, if it persists, comes back marked `transient`: reported in the build, never cached. A worker
process that dies is restarted by Ray and its batches retried, a bounded number of times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.config.build import (BuildConfig, QualityGateConfig, TextConfig, TTSConfig, ValidationConfig,
                                    VoiceConfig)
from omniforge.storage.audio import audio_seconds, decode_audio, encode_audio
from omniforge.tasks.build.checks import AudioRejected, check_audio
from omniforge.tasks.build.gate import QualityGate, retry_voice
from omniforge.tasks.common.audio_ops import join_segments, resample
from omniforge.tasks.common.ray_runtime import map_on_actors
from omniforge.tasks.build.tts import EngineSet


@dataclass
class _Take:
    """One saying of a job: its native audio, that at the input rate, and what the ASR heard of it
    with others (None: not heard yet)."""

    native: np.ndarray
    rate: int
    backend: str
    wave: np.ndarray
    heard: str | None = None


class SynthesisWorker:
    """Turns jobs (segments + voice, or provided audio) into cache rows. Plain class: the same
    code runs in a Ray actor and in the benchmark's bare loop."""

    sample_rate = INPUT_SAMPLE_RATE  # of the `audio` column: what the model hears

    def __init__(self, tts: TTSConfig, validation: ValidationConfig, gate: QualityGateConfig, text: TextConfig,
                 threads: int = 1, retries: int = 0, backoff_s: float = 0.0) -> None:
        self.engines = EngineSet(tts, threads)
        self.validation, self.gate_config = validation, gate
        self.pause_s = text.segment_pause_s
        self.retries, self.backoff_s = retries, backoff_s
        self.gate = QualityGate(gate, threads, self._say_reference, text.normalizer_cache)

    def run(self, jobs: list[dict]) -> list[dict]:
        takes = self._first_takes(jobs)
        return [self.one(job, takes.get(job["key"])) for job in jobs]

    def _first_takes(self, jobs: list[dict]) -> dict[str, _Take]:
        """Each job's first audio, said now and heard together by the gate's ASR; a job whose
        saying fails here is left to `one`, which tries it as usual."""
        takes: dict[str, _Take] = {}
        for job in jobs:
            if job.get("provided_audio") is None:
                try:
                    takes[job["key"]] = self._take(job, 0)
                except Exception:  # noqa: BLE001 - `one` retries it and reports what it was
                    continue
        heard = self.gate.hear_together([take.wave for take in takes.values()])
        for take, words in zip(takes.values(), heard, strict=True):
            take.heard = words
        return takes

    def one(self, job: dict, take: _Take | None = None) -> dict:
        """Say the job (again at another tempo while the audio is rejected, up to the gate's
        `resynthesis`); a failure that is not the audio's own is retried as it is, then `transient`.
        `take`: its first audio, said already."""
        row = {"key": job["key"], "audio": None, "audio_native": None, "native_sampling_rate": None,
               "duration": None, "backend": None, "error_reason": None, "error": None, "asr_text": None}
        tries = 1 if job.get("provided_audio") is not None else 1 + self.gate_config.resynthesis
        rejected = None
        for attempt in range(tries):
            for trial in range(self.retries + 1):
                try:
                    first = take if attempt == trial == 0 else None
                    return {**row, **self._accepted(job, attempt, first), "attempts": attempt + 1}
                except AudioRejected as err:  # the same text and voice would give the same audio again
                    rejected = err
                    break
                except Exception as err:  # noqa: BLE001 - anything else may pass on a retry; the build goes on
                    if trial < self.retries:
                        time.sleep(self.backoff_s * 2 ** trial)
                        continue
                    return {**row, "error_reason": "transient_failure", "transient": True,
                            "error": f"{type(err).__name__}: {err} (after {trial + 1} tries)"}
        return {**row, **rejected.figures, "error_reason": rejected.reason, "error": rejected.detail,
                "attempts": tries}

    def _accepted(self, job: dict, attempt: int, take: _Take | None = None) -> dict:
        """Try `attempt`'s audio (`take`, when said already) through the level checks and the gate: its
        row fields, or AudioRejected."""
        take = take or self._take(job, attempt)
        wave = take.wave
        check_audio(wave, self.sample_rate, self.sample_rate, self.validation)
        chosen = None if job.get("provided_audio") is not None else VoiceConfig.model_validate(job["voice"])
        figures = self.gate.measure(wave, " ".join(job["segments"]), chosen, take.heard)
        try:
            self.gate.check(figures)
        except AudioRejected as err:
            err.figures = figures.row()
            raise
        return {**figures.row(), "audio": encode_audio(wave, self.sample_rate),
                "audio_native": encode_audio(take.native, take.rate), "native_sampling_rate": take.rate,
                "duration": len(wave) / self.sample_rate, "backend": take.backend}

    def _take(self, job: dict, attempt: int) -> _Take:
        native, rate, backend = self._speak(job, attempt)
        return _Take(native, rate, backend, resample(native, rate, self.sample_rate))

    def _speak(self, job: dict, attempt: int) -> tuple[np.ndarray, int, str]:
        if job.get("provided_audio") is not None:
            seconds = audio_seconds(job["provided_audio"])  # from the header: a long file is never decoded
            if seconds is not None and seconds > self.validation.max_duration_s:
                raise AudioRejected("too_long", f"{seconds:.2f} s > {self.validation.max_duration_s} s")
            try:
                wave, rate = decode_audio(job["provided_audio"])
            except Exception as err:  # noqa: BLE001 - soundfile raises several types
                raise AudioRejected("bad_audio", f"the provided speech cannot be decoded ({err})") from err
            return wave, rate, "provided"
        voice = retry_voice(VoiceConfig.model_validate(job["voice"]), attempt, self.gate_config.tempo_step)
        wave, rate = self._say(job["segments"], voice)
        return wave, rate, voice.backend

    def _say(self, segments: list[str], voice: VoiceConfig) -> tuple[np.ndarray, int]:
        engine = self.engines.get(voice.backend)
        parts, rate = [], 0
        for segment in segments:
            wave, rate = engine.synthesize(segment, voice)
            parts.append(wave)
        return join_segments(parts, rate, self.pause_s), rate

    def _say_reference(self, voice: VoiceConfig) -> np.ndarray:
        wave, rate = self._say([self.gate_config.reference_text], voice)
        return resample(wave, rate, self.sample_rate)


def worker_args(config: BuildConfig) -> tuple:
    """What a worker is built from (the same in a Ray actor and in the benchmark's bare loop)."""
    settings = config.synthesis
    return (config.tts, config.validation, config.gate, config.text, max(1, int(settings.cpus_per_worker)),
            settings.retries, settings.retry_backoff_s)


def make_worker(config: BuildConfig) -> SynthesisWorker:
    return SynthesisWorker(*worker_args(config))


def remembered(rows: list[dict]) -> list[dict]:
    """The rows the utterance cache keeps: all but transient failures."""
    return [row for row in rows if not row.get("transient")]


def synthesize_on_ray(jobs: Iterable[dict], config: BuildConfig, on_result: Callable[[list[dict]], None]) -> None:
    """Run `jobs` (read lazily: any number) on `config.synthesis.workers` Ray actors; call `on_result`
    with each finished batch, in completion order. Needs a Ray session (tasks.common.ray_runtime)."""
    settings = config.synthesis
    map_on_actors(SynthesisWorker, worker_args(config), jobs, settings.batch_size, settings.workers, on_result,
                  settings.cpus_per_worker, settings.gpus_per_worker, retries=settings.retries)
