"""LoRA on the LLM through peft, kept resumable: the base weights never change during the stage
(they are the starting checkpoint's), checkpoints hold the merged model for every consumer, and the
adapters themselves travel in the training state."""

from __future__ import annotations

import copy

from omniforge.config.train import LoraConfig
from omniforge.model.modeling_omni import OmniModel


def add_lora(model: OmniModel, settings: LoraConfig) -> None:
    """Wrap the LLM with fresh adapters; peft freezes its base weights."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model.llm = get_peft_model(model.llm, PeftLoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                                                         lora_dropout=settings.dropout,
                                                         target_modules=settings.target_modules))


def merged(model: OmniModel) -> OmniModel:
    """A copy with the adapters folded into the LLM's weights: a plain OmniModel to save."""
    plain = copy.deepcopy(model)
    plain.llm = plain.llm.merge_and_unload()
    return plain
