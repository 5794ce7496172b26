"""The quality gate: does a synthesized utterance say its text, well, in the chosen voice?

Each measure is one number kept with the utterance (the build's figures): what the ASR hears against
the text (word error rate), DNSMOS, letters per second of voiced audio, and the cosine similarity of
its speaker embedding to the chosen voice's. A voice's reference embedding comes from that voice
saying `reference_text` once per worker. A failed measure is an `AudioRejected` naming it, with the
figure and its bound; the synthesis worker then says the turn again (`retry_voice`) or rejects it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from omniforge.config.build import QualityGateConfig, VoiceConfig
from omniforge.hashing import stable_hash
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.tasks.build.checks import AudioRejected
from omniforge.tasks.common.asr import word_error_rate
from omniforge.tasks.common.speaker import similarity
from omniforge.tasks.common.speech_text import Unspeakable, spell_out
from omniforge.tasks.common.audio_ops import silence_ratio


@dataclass
class GateFigures:
    asr_text: str | None = None
    asr_wer: float | None = None
    dnsmos: float | None = None
    speaking_rate: float | None = None       # letters per voiced second
    speaker_similarity: float | None = None  # to the chosen voice's reference

    def row(self) -> dict:
        return asdict(self)


FIGURES = tuple(name for name in GateFigures.__dataclass_fields__ if name != "asr_text")
REASONS = ("asr_mismatch", "low_mos", "too_slow", "too_fast", "wrong_voice")  # what `QualityGate.check` raises


def letters(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def speaking_rate(wave: np.ndarray, text: str) -> float:
    """Letters of the text per second of audio that is not silence."""
    voiced = len(wave) / INPUT_SAMPLE_RATE * (1.0 - silence_ratio(wave, INPUT_SAMPLE_RATE))
    return letters(text) / max(voiced, 1e-3)


def retry_voice(voice: VoiceConfig, attempt: int, step: float) -> VoiceConfig:
    """The voice for try `attempt` (0: as chosen): slower, faster, slower still, ..."""
    if attempt == 0:
        return voice
    size = (attempt + 1) // 2
    factor = 1.0 - step * size if attempt % 2 else 1.0 + step * size
    return voice.model_copy(update={"tempo": voice.tempo * factor})


class QualityGate:
    """Runs in each synthesis worker; `say_reference(voice)` makes a voice's reference audio."""

    def __init__(self, config: QualityGateConfig, threads: int, say_reference: Callable[[VoiceConfig], np.ndarray],
                 normalizer_cache: str) -> None:
        self.config = config
        self.say_reference, self.normalizer_cache = say_reference, normalizer_cache
        self.transcriber = self.mos = self.speakers = None
        if config.asr:
            from omniforge.tasks.common.asr import Transcriber

            self.transcriber = Transcriber(config.asr_model, threads)
        if config.enabled and config.min_mos is not None:
            from omniforge.tasks.common.mos import Dnsmos

            self.mos = Dnsmos(threads)
        if config.enabled and config.min_speaker_similarity is not None:
            from omniforge.tasks.common.speaker import SpeakerEncoder

            self.speakers = SpeakerEncoder()
        self._references: dict[str, np.ndarray] = {}

    def hear_together(self, waves: list[np.ndarray]) -> list[str | None]:
        """What the ASR hears of several utterances heard in shared windows (several times faster
        than one by one), for `measure`; None for each where there is nothing to share."""
        if not self.config.enabled or self.transcriber is None or len(waves) < 2:
            return [None] * len(waves)
        return self.transcriber.transcribe_many(waves)

    def measure(self, wave: np.ndarray, text: str, voice: VoiceConfig | None, heard: str | None = None) -> GateFigures:
        """Every configured figure of a wave at the input rate; `voice` None: provided audio (no
        chosen voice to compare with); `heard`: what `hear_together` heard of it."""
        figures = GateFigures()
        if not self.config.enabled:
            return figures
        if self.transcriber is not None:
            figures.asr_text, figures.asr_wer = self._hear(wave, text, heard)
        if self.mos is not None:
            figures.dnsmos = self.mos.score(wave)
        if self.config.speaking_rate is not None:
            figures.speaking_rate = speaking_rate(wave, text)
        if self.speakers is not None and voice is not None:
            figures.speaker_similarity = similarity(self.speakers.embed(wave), self._reference(voice))
        return figures

    def check(self, figures: GateFigures) -> None:
        """Raise AudioRejected naming the first figure out of its bound."""
        config = self.config
        if figures.asr_wer is not None and figures.asr_wer > config.max_wer:
            raise AudioRejected("asr_mismatch", f"WER {figures.asr_wer:.2f} > {config.max_wer} "
                                                f"(heard {figures.asr_text!r})")
        if figures.dnsmos is not None and figures.dnsmos < config.min_mos:
            raise AudioRejected("low_mos", f"DNSMOS {figures.dnsmos:.2f} < {config.min_mos}")
        if figures.speaking_rate is not None:
            low, high = config.speaking_rate
            if figures.speaking_rate < low:
                raise AudioRejected("too_slow", f"{figures.speaking_rate:.1f} letters/s < {low}")
            if figures.speaking_rate > high:
                raise AudioRejected("too_fast", f"{figures.speaking_rate:.1f} letters/s > {high}")
        if figures.speaker_similarity is not None and figures.speaker_similarity < config.min_speaker_similarity:
            raise AudioRejected("wrong_voice", f"speaker similarity {figures.speaker_similarity:.2f} < "
                                               f"{config.min_speaker_similarity}")

    def _hear(self, wave: np.ndarray, text: str, together: str | None) -> tuple[str, float]:
        """What the ASR hears of the wave and its WER against the text: as heard together with others
        where that matches, else as heard alone, so an utterance is never rejected for a neighbour's blur."""
        if together is not None:
            wer = word_error_rate(text, self._spoken(together))
            if wer <= self.config.max_wer:
                return together, wer
        heard = self.transcriber.transcribe(wave)
        return heard, word_error_rate(text, self._spoken(heard))

    def _spoken(self, heard: str) -> str:
        """What the ASR heard, its numbers as words like the turn's text (Whisper writes digits)."""
        try:
            return spell_out(heard, self.normalizer_cache)
        except Unspeakable:
            return heard

    def _reference(self, voice: VoiceConfig) -> np.ndarray:
        key = stable_hash(voice.model_dump(mode="json"))
        if key not in self._references:
            self._references[key] = self.speakers.embed(self.say_reference(voice))
        return self._references[key]


def gate_identity(config: QualityGateConfig) -> dict | None:
    """What of the gate decides which audio an utterance ends with (None: no gate); what becomes of a
    dialogue with a rejected turn (`on_reject`) is the publishing's business, not the utterance's."""
    return config.model_dump(mode="json", exclude={"on_reject"}) if config.enabled else None
