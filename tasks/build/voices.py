"""Who speaks: the assistant's one fixed voice and a reproducible pool of user voices.

With one neural voice offline, the pool is made diverse honestly: pitch, tempo and length
variations of each Piper voice, plus espeak-ng's voices when espeak-ng is installed. The pool's
description goes into the dataset manifest, so nobody mistakes it for many real speakers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from omniforge.config.build import TTSConfig, UserVoicePoolConfig, VoiceConfig
from omniforge.hashing import stable_hash

ASSISTANT_SPEAKER = "assistant"

# the Unicode scripts (first word of a letter's name) a language is written in; others are LATIN
LANGUAGE_SCRIPTS = {
    "zh": {"CJK"}, "cmn": {"CJK"}, "yue": {"CJK"}, "ja": {"CJK", "HIRAGANA", "KATAKANA"}, "ko": {"HANGUL"},
    "ru": {"CYRILLIC"}, "uk": {"CYRILLIC"}, "bg": {"CYRILLIC"}, "sr": {"CYRILLIC"}, "mk": {"CYRILLIC"},
    "el": {"GREEK"}, "ar": {"ARABIC"}, "fa": {"ARABIC"}, "ur": {"ARABIC"}, "he": {"HEBREW"},
    "hi": {"DEVANAGARI"}, "mr": {"DEVANAGARI"}, "ne": {"DEVANAGARI"}, "th": {"THAI"}, "ka": {"GEORGIAN"},
    "hy": {"ARMENIAN"}, "bn": {"BENGALI"}, "ta": {"TAMIL"},
}
COSYVOICE2_LANGUAGES = ("en", "zh", "ja", "ko", "yue")  # CosyVoice 2's languages (its paper)


@dataclass(frozen=True)
class Voice:
    speaker: str
    config: VoiceConfig


def user_voice_pool(config: UserVoicePoolConfig, with_espeak: bool) -> list[Voice]:
    rng = random.Random(config.seed)
    use_espeak = with_espeak and config.espeak_voices and config.espeak_share > 0
    n_espeak = round(config.size * config.espeak_share) if use_espeak else 0
    pool = []
    for index in range(config.size):
        backend = "espeak" if index >= config.size - n_espeak else "piper"
        names = config.espeak_voices if backend == "espeak" else config.piper_voices
        voice = VoiceConfig(
            backend=backend,
            voice=names[index % len(names)],
            pitch_semitones=round(rng.uniform(*config.pitch_semitones), 2),
            tempo=round(rng.uniform(*config.tempo), 3),
            length_scale=round(rng.uniform(*config.length_scale), 3),
        )
        pool.append(Voice(f"user-{index:03d}-{backend}", voice))
    return pool


def user_voice_for(dialogue_id: str, pool: list[Voice], seed: int) -> Voice:
    """The same dialogue always gets the same voice, whatever else is in the build."""
    return pool[int(stable_hash([seed, dialogue_id]), 16) % len(pool)]


def assistant_voice(config: TTSConfig) -> Voice:
    return Voice(ASSISTANT_SPEAKER, config.assistant)


def describe_pool(pool: list[Voice]) -> dict:
    backends: dict[str, int] = {}
    for voice in pool:
        backends[voice.config.backend] = backends.get(voice.config.backend, 0) + 1
    return {
        "speakers": len(pool),
        "by_backend": backends,
        "base_voices": sorted({f"{v.config.backend}:{v.config.voice}" for v in pool}),
        "method": "each speaker is a base voice with its own pitch shift, tempo and length scale; "
                  "Piper variants share one neural voice model",
    }


def language_of(voice: VoiceConfig) -> list[str]:
    """The languages a voice speaks: espeak's from its name (en-gb+f3 -> en), Piper's from its model
    card (the .onnx.json beside the model), CosyVoice 2's own list."""
    if voice.backend == "cosyvoice2":
        return list(COSYVOICE2_LANGUAGES)
    if voice.backend == "espeak":
        return [voice.voice.split("+")[0].split("-")[0].lower()]
    if voice.voice == "joe":
        return ["en"]
    card = Path(f"{voice.voice}.json")
    family = json.loads(card.read_text()).get("language", {}).get("family") if card.is_file() else None
    return [family or "en"]


def speakable_scripts(voices: list[Voice]) -> frozenset[str]:
    """The scripts every one of `voices` speaks: a turn must be sayable by whichever voice draws it."""
    sets = [{script for lang in language_of(v.config) for script in LANGUAGE_SCRIPTS.get(lang, {"LATIN"})}
            for v in voices]
    return frozenset(set.intersection(*sets)) if sets else frozenset({"LATIN"})
