"""espeak-ng gets the text on stdin: a turn that starts with "-" is spoken, never parsed as options
(`-wNAME` would write the audio to a file NAME and give the build nothing)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from omniforge.config.build import VoiceConfig
from omniforge.tasks.build.tts import EspeakEngine

VOICE = VoiceConfig(backend="espeak", voice="en-us")


def test_a_turn_that_looks_like_an_option_is_spoken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = EspeakEngine()
    wave, rate = engine.synthesize("-wpwned.wav hello there, this is spoken", VOICE)
    assert len(wave) / rate > 1.0
    assert os.listdir(tmp_path) == []  # nothing written where the command ran


@settings(max_examples=15, deadline=None)
@given(option=st.sampled_from(["-w", "--stdout", "-v", "-f", "--help", "-q", "-x", "--ipa", "-m", "-"]),
       rest=st.sampled_from(["x.wav", "", "en", "100", " "]))
def test_any_option_like_prefix_is_spoken_as_text(option, rest):
    wave, rate = EspeakEngine().synthesize(f"{option}{rest} the weather is nice today", VOICE)
    assert len(wave) / rate > 0.8  # "the weather is nice today" was said, whatever came before it
