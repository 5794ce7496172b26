"""`pretrain_tts`: the TTS LM's streaming pretraining (the paper's stage I(b)) on the TTS corpus's
units, read-write interleaved as streaming inference writes. Its checkpoint is what later trainings
of the same units tokenizer start from (`train.tts_from`): one pretraining, many LLM trainings."""

from __future__ import annotations

from prefect import flow

from omniforge.config import PipelineConfig
from omniforge.flows.train import train
from omniforge.tasks.train import steps as train_steps


@flow(name="pretrain-tts", log_prints=True)
def pretrain_tts(config: PipelineConfig, speech: str | None = None, units: str | None = None) -> dict:
    """Pretrain on speech/units of `corpus.name` (the latest, or the versions given); returns the
    train flow's summary (its `checkpoint` is the pretrained TTS)."""
    speech = speech or f"speech/{config.corpus.name}"
    units = units or f"units/{config.corpus.name}"
    return train(train_steps.tts_pretraining(config, speech, units))
