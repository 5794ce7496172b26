"""Gate fusion: the TTS LM's input at each text position mixes the LLM's hidden state with the
TTS LM's own embedding of the token (SPEC.md, "Gate fusion")."""

from __future__ import annotations

import torch
from torch import nn


class GateFusion(nn.Module):
    """r = Linear(2H -> H_tts)(ReLU(Linear(H -> 2H)(h)));  g = sigmoid(Linear(2H_tts -> H_tts)([r; e]));
    c = g * r + (1 - g) * e. Names match the released checkpoints (input_proj.0/.2, gate.0)."""

    def __init__(self, llm_hidden: int, tts_hidden: int, gate_init_bias: float | None = None) -> None:
        """`gate_init_bias`: start the gate at sigmoid(this) everywhere (its weights at zero); very
        negative starts it closed (c = e), so a TTS LM trained on text embeddings alone starts
        speech-to-speech training where it left off and the gate opens only where the LLM's states
        lower the loss. None: torch's default initialisation (g near 0.5, half of every input replaced
        by an untrained projection)."""
        super().__init__()
        self.input_proj = nn.Sequential(nn.Linear(llm_hidden, 2 * llm_hidden), nn.ReLU(),
                                        nn.Linear(2 * llm_hidden, tts_hidden))
        self.gate = nn.Sequential(nn.Linear(2 * tts_hidden, tts_hidden), nn.Sigmoid())
        if gate_init_bias is not None:
            nn.init.zeros_(self.gate[0].weight)
            nn.init.constant_(self.gate[0].bias, gate_init_bias)

    def forward(self, llm_hidden: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        projected = self.input_proj(llm_hidden)
        gate = self.gate(torch.cat([projected, token_embeds], dim=-1))
        return gate * projected + (1 - gate) * token_embeds
