"""The Whisper encoder on variable-length input.

transformers' WhisperEncoder insists on 30 s (3000 mel frames). The encoder itself does not need
that: slicing the positional embeddings to the input length is enough (SPEC.md). A padded batch
masks padding in attention, so every item encodes as it would alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # only a type here; importing transformers costs seconds where no encoder runs
    from transformers.models.whisper.modeling_whisper import WhisperEncoder


def max_input_frames(encoder: WhisperEncoder) -> int:
    """The most mel frames the encoder takes (its positions, before the stride-2 convolution)."""
    return encoder.embed_positions.num_embeddings * encoder.conv2.stride[0]


def encoder_lengths(mel_lengths: torch.Tensor) -> torch.Tensor:
    """Valid encoder frames per item: the second conv has stride 2."""
    return (mel_lengths + 1) // 2


def encode_speech(encoder: WhisperEncoder, features: torch.Tensor, mel_lengths: torch.Tensor,
                  depth: int | None = None) -> torch.Tensor:
    """features (B, n_mels, T) -> hidden states (B, ceil(T/2), d_model); frames past each item's
    valid length are padding. `depth`: the states after that many layers (no final layer norm)
    instead of the encoder's output."""
    # zero each item's padding before each convolution, as the convolutions' own zero padding
    # does for an item alone: then a padded batch encodes every item exactly as alone
    in_range = torch.arange(features.shape[-1], device=features.device)[None, :] < mel_lengths[:, None]
    hidden = nn.functional.gelu(encoder.conv1(features * in_range[:, None, :]))
    hidden = nn.functional.gelu(encoder.conv2(hidden * in_range[:, None, :])).permute(0, 2, 1)
    frames = hidden.shape[1]
    if frames > encoder.embed_positions.num_embeddings:
        raise ValueError(f"speech too long for this encoder: {frames} frames > "
                         f"{encoder.embed_positions.num_embeddings} positions (30 s for Whisper)")
    hidden = hidden + encoder.embed_positions.weight[:frames]
    valid = torch.arange(frames, device=features.device)[None, :] < encoder_lengths(mel_lengths)[:, None]
    mask = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
    mask = mask.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :]
    layers = encoder.layers if depth is None else encoder.layers[:depth]
    for layer in layers:
        hidden = layer(hidden, mask)
    return encoder.layer_norm(hidden) if depth is None else hidden
