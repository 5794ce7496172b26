"""What FSDP wraps, and activation checkpointing really recomputing (FSDP itself on Ray Train:
tests/end_to_end/test_train_flow.py)."""

from __future__ import annotations

import torch

from omniforge.tasks.train.sharding import block_classes, checkpoint_activations
from tests.tiny_model import tiny_model


def test_the_wrap_units_are_the_transformer_blocks_of_every_part():
    assert block_classes(tiny_model()) == {"Qwen2DecoderLayer", "WhisperEncoderLayer"}


def _block_forwards(model) -> int:
    """Runs of the LLM's first block's MLP in one training step (its forward itself is counted: the
    recomputation does not go through module hooks)."""
    calls = []
    mlp = model.llm.model.layers[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    model.train()
    model.llm(torch.tensor([[1, 2, 3, 4]])).logits.sum().backward()
    return len(calls)


def test_activation_checkpointing_recomputes_each_block_in_the_backward_pass():
    plain, recomputed = tiny_model(), tiny_model()
    checkpoint_activations(recomputed)
    assert _block_forwards(plain) == 1 and _block_forwards(recomputed) == 2
    assert recomputed.speech_generator.model.is_activation_checkpointing
