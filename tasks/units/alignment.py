"""When each word of an utterance is said: forced alignment of speech to its known text, for aligned
read-write training (`model/read_write.py` turns it into each text token's share of the units).

faster-whisper aligns a known token sequence to the audio by dynamic time warping over Whisper's
cross-attention (its word timestamps, with the text given instead of decoded). Several utterances
share one 30 s window (joined with short silences), so a corpus aligns at about a dozen utterances
per second on one core with tiny.en.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.tasks.common.asr import joined, packed, resolve_model

GAP_SECONDS = 0.3  # silence between utterances aligned together (their words are known: a short one does)


@dataclass
class WordTimes:
    """An utterance's words: where each starts in its text, and when it is said (seconds)."""

    chars: list[int]
    starts: list[float]
    ends: list[float]

    @classmethod
    def uniform(cls, seconds: float) -> "WordTimes":
        """One word spanning the whole utterance: its characters said at an even pace (what an
        utterance that cannot be aligned falls back to)."""
        return cls([0], [0.0], [seconds])


class WordAligner:
    def __init__(self, model: str = "tiny.en", threads: int = 1) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model = WhisperModel(resolve_model(model), device="cpu", compute_type="int8", cpu_threads=threads)
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                   language="en")

    def align(self, waves: list[np.ndarray], texts: list[str]) -> list[WordTimes]:
        """Waves at Whisper's input rate and their texts -> their words' times."""
        aligned: list[WordTimes] = []
        for run in packed([len(w) / INPUT_SAMPLE_RATE for w in waves], GAP_SECONDS):
            aligned += self._window(waves[run.start:run.stop], texts[run.start:run.stop])
        return aligned

    def _window(self, waves: list[np.ndarray], texts: list[str]) -> list[WordTimes]:
        """Utterances that fit one window, aligned together and split back."""
        text, char_offsets = "", []
        for line in texts:
            text += " " if text else ""
            char_offsets.append(len(text))
            text += line
        wave, time_offsets = joined(waves, GAP_SECONDS)
        words = self._words(wave, text)
        if words is None:  # the window did not align as one: each utterance on its own, or evenly
            if len(waves) > 1:
                return [self._window([w], [t])[0] for w, t in zip(waves, texts)]
            return [WordTimes.uniform(len(waves[0]) / INPUT_SAMPLE_RATE)]
        result = []
        for index, text in enumerate(texts):
            first, last = char_offsets[index], char_offsets[index] + len(text)
            mine = [(c, s, e) for c, s, e in words if first <= c < last]
            if not mine:
                result.append(WordTimes.uniform(len(waves[index]) / INPUT_SAMPLE_RATE))
                continue
            offset, seconds = time_offsets[index], len(waves[index]) / INPUT_SAMPLE_RATE

            def within(at: float) -> float:  # a time in the silences around the utterance is at its edge
                return min(max(at - offset, 0.0), seconds)

            result.append(WordTimes([c - first for c, _, _ in mine], [within(s) for _, s, _ in mine],
                                    [within(e) for _, _, e in mine]))
        return result

    def _words(self, wave: np.ndarray, text: str) -> list[tuple[int, float, float]] | None:
        """(first non-space character, start, end) of each word of `text` in `wave`; None when
        Whisper's words do not spell the text back."""
        from faster_whisper.audio import pad_or_trim

        features = self.model.feature_extractor(wave)
        encoded = self.model.encode(pad_or_trim(features))
        tokens = self.tokenizer.encode(" " + text)
        words = self.model.find_alignment(self.tokenizer, [tokens], encoded, features.shape[-1] - 1)[0]
        if "".join(w["word"] for w in words) != " " + text:
            return None
        found, at = [], -1  # `at`: where the word starts in `text` (its leading space at -1 for the first)
        for word in words:
            spoken = word["word"]
            first = at + len(spoken) - len(spoken.lstrip())
            if spoken.strip():
                found.append((first, float(word["start"]), float(word["end"])))
            at += len(spoken)
        return found
