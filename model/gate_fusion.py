"""Gate fusion: the TTS LM's input at each text position mixes the LLM's hidden state with the
TTS LM's own embedding of the token (SPEC.md, "Gate fusion")."""

from __future__ import annotations

import torch
from torch import nn


class GateFusion(nn.Module):
    """r = Linear(2H -> H_tts)(ReLU(Linear(H -> 2H)(h)));  g = sigmoid(Linear(2H_tts -> H_tts)([r; e]));
    c = g * r + (1 - g) * e. Names match the released checkpoints (input_proj.0/.2, gate.0)."""

    def __init__(self, llm_hidden: int, tts_hidden: int) -> None:
        super().__init__()
        self.input_proj = nn.Sequential(nn.Linear(llm_hidden, 2 * llm_hidden), nn.ReLU(),
                                        nn.Linear(2 * llm_hidden, tts_hidden))
        self.gate = nn.Sequential(nn.Linear(2 * tts_hidden, tts_hidden), nn.Sigmoid())

    def forward(self, llm_hidden: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        projected = self.input_proj(llm_hidden)
        gate = self.gate(torch.cat([projected, token_embeds], dim=-1))
        return gate * projected + (1 - gate) * token_embeds
