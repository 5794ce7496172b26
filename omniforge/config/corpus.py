"""Settings of the TTS corpus (assistant-voice speech for text that is not a dialogue) and of the
TTS LM pretraining on it (the paper's stage I(b), streaming TTS pretraining)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from omniforge.config.base import Section
from omniforge.config.train import StageConfig


class CorpusSourceConfig(Section):
    """Where the corpus's text comes from: one utterance per sentence (or per record)."""

    kind: Literal["english", "demo", "jsonl", "hf", "none"] = Field(
        "english", description="english: everyday English sentences (a word-trigram chain shipped offline, "
        "tasks/build/english_text.py); demo: varied sentences over the demo's facts; jsonl: a text field per "
        "line; hf: a dataset's text column; none: only the dialogues' assistant turns.")
    path: str | None = Field(None, description="JSONL path/URL (jsonl), or dataset directory / hub name (hf).")
    text_field: str = Field("text", description="The JSONL key or dataset column that holds the text.")
    hf_split: str = Field("train", description="Split of the HF dataset.")
    hf_config: str | None = Field(None, description="Config (subset) name of the HF dataset.")
    sentences: int = Field(3000, ge=1, description="english, demo: sentences to generate (a larger number keeps "
                           "the smaller one's sentences, so a grown corpus is built incrementally).")
    words: tuple[int, int] = Field((5, 14), description="english: shortest and longest sentence, in words.")
    limit: int | None = Field(None, ge=1, description="Keep at most this many texts (the first ones).")
    seed: int = Field(0, description="Seed of the demo generator.")


class CorpusConfig(Section):
    """The TTS corpus and the TTS LM pretrained on it. The corpus is built like the dialogues (same
    assistant voice, TTS cache, incremental versions), tokenized with the dialogue units' tokenizer,
    and the pretrained TTS LM is a checkpoint that every later training of the same units and text
    tokenizer starts from (`train.tts_from`) instead of retraining it."""

    enabled: bool = Field(False, description="Build the corpus and pretrain the TTS LM in `omniforge run`.")
    name: str = Field("demo-tts", description="Its speech/, units/ and checkpoint/ artifact name.")
    source: CorpusSourceConfig = Field(default_factory=CorpusSourceConfig, description="Text of the corpus.")
    dialogues: str | None = Field(None, description="A speech version (speech/NAME[@version]) whose assistant "
                                  "turns join the corpus (their audio is in the TTS cache already); None: none.")
    pretrain: StageConfig = Field(default_factory=lambda: StageConfig(steps=600, batch_size=16, lr=2e-3),
                                  description="The TTS LM pretraining (stage I(b)) on the corpus.")
