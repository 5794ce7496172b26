"""The speech adapter (the released "EncoderProjectorConcat"): 5 encoder frames -> 1 LLM vector."""

from __future__ import annotations

import torch
from torch import nn


class SpeechAdapter(nn.Module):
    """Drop the last `len % k` frames, concatenate every k frames, then Linear-ReLU-Linear.
    Output length is floor(encoder_len / k): 10 vectors per second of speech for k = 5."""

    def __init__(self, encoder_hidden: int, llm_hidden: int, k: int = 5, hidden: int = 2048) -> None:
        super().__init__()
        self.k = k
        self.linear1 = nn.Linear(encoder_hidden * k, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, llm_hidden)

    def output_lengths(self, encoder_lengths: torch.Tensor) -> torch.Tensor:
        return encoder_lengths // self.k

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, length, dim = frames.shape
        usable = length - length % self.k
        stacked = frames[:, :usable].reshape(batch, usable // self.k, dim * self.k)
        return self.linear2(self.relu(self.linear1(stacked)))
