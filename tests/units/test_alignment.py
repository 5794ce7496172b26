"""Forced word alignment on real speech: Piper says sentences, tiny.en aligns their known words,
packed several to a window as a corpus is; aligned read-write training reads these times."""

from __future__ import annotations

import re

import numpy as np
import pytest

from omniforge.config.build import VoiceConfig
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.model.read_write import token_unit_counts
from omniforge.tasks.build.tts import PiperEngine
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.units.alignment import WordAligner

SENTENCES = ["The doctor told him to drink more water.", "Copenhagen is the capital of Denmark.",
             "She stopped, then walked home slowly."]


@pytest.fixture(scope="module")
def spoken():
    engine = PiperEngine()
    waves = []
    for text in SENTENCES:
        wave, rate = engine.synthesize(text, VoiceConfig())
        waves.append(resample(wave, rate, INPUT_SAMPLE_RATE))
    return waves


def test_words_are_found_in_order_within_their_utterance(spoken):
    aligner = WordAligner("tiny.en")
    packed = aligner.align(spoken, SENTENCES)
    assert len(packed) == len(SENTENCES)
    for text, wave, words in zip(SENTENCES, spoken, packed):
        seconds = len(wave) / INPUT_SAMPLE_RATE
        found = [text[c:].split()[0].strip(",.") for c in words.chars]  # marks of their own strip to ''
        assert [word for word in found if word] == re.findall(r"[\w']+", text)
        assert words.starts == sorted(words.starts) and all(s <= e for s, e in zip(words.starts, words.ends))
        assert 0 <= words.starts[0] < 0.5 and seconds - 0.6 < words.ends[-1] <= seconds + 0.1
    # packing several utterances into one window changes little against aligning each alone (the words'
    # starts: Whisper's alignment is coarse, 20 ms steps and a word's edge now and then 0.2 s off)
    alone = [aligner.align([wave], [text])[0] for wave, text in zip(spoken, SENTENCES)]
    shifts = []
    for together, single, text in zip(packed, alone, SENTENCES):
        assert together.chars == single.chars
        shifts += [abs(a - b) for c, a, b in zip(together.chars, together.starts, single.starts) if text[c].isalnum()]
    assert np.median(shifts) <= 0.04 and max(shifts) < 0.3


def test_a_long_word_gets_more_units_than_short_ones(spoken):
    """"Copenhagen is the capital of Denmark.", one token per word and mark: the units each gets follow
    how long it is said, and add up to the utterance's."""
    text, wave = SENTENCES[1], spoken[1]
    [words] = WordAligner("tiny.en").align([wave], [text])
    n_units = round(len(wave) / INPUT_SAMPLE_RATE * 25)
    starts = [m.start() for m in re.finditer(r"[\w']+|[.,]", text)]
    counts = dict(zip(re.findall(r"[\w']+|[.,]", text),
                      token_unit_counts(starts, words.chars, words.starts, words.ends, len(text), n_units, 25)))
    assert sum(counts.values()) == n_units
    assert counts["Copenhagen"] > max(counts["is"], counts["of"])  # tiny.en's word edges are coarse: no finer claim
