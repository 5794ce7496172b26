"""Pronunciations as a TTS LM input: each text token's phonemes, embedded and added to the token's own
embedding, so a small TTS LM maps sounds to speech instead of first learning English spelling from a
few thousand sentences (a name it never read, "Bogota", is spelled in sounds it heard many times).

The phonemes come from outside the model (`tasks/common/pronunciation.py`): `Pronounce` is what the
model asks of them."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

NO_PHONEME = 0  # padding: a token with fewer phonemes than the width


class Pronounce(Protocol):
    def __call__(self, text_ids: list[int], final: bool) -> list[list[int]]:
        """Phoneme ids (from 1) of the leading text tokens whose words are complete: all of them when
        `final` (the text has ended), else those before the word still being written."""


class PhonemeEmbedding(nn.Module):
    """A token's phonemes -> one vector: the sum of each phoneme's embedding plus its place in the
    token (so "st" and "ts" differ)."""

    def __init__(self, vocab_size: int, per_token: int, hidden_size: int) -> None:
        super().__init__()
        self.per_token = per_token
        self.phoneme = nn.Embedding(vocab_size, hidden_size, padding_idx=NO_PHONEME)
        self.place = nn.Embedding(per_token, hidden_size)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(tokens, width) phoneme ids (`phoneme_rows`) -> (tokens, hidden); a token's phonemes past
        `per_token` are dropped."""
        rows = rows[:, : self.per_token]
        present = (rows != NO_PHONEME).unsqueeze(-1)
        places = self.place.weight[None, : rows.shape[1]]
        return ((self.phoneme(rows) + places) * present).sum(dim=1)


def phoneme_rows(phonemes: list[list[int]]) -> torch.Tensor:
    """Each token's phoneme ids as a (tokens, longest) tensor, padded with NO_PHONEME."""
    out = torch.full((len(phonemes), max([1] + [len(p) for p in phonemes])), NO_PHONEME, dtype=torch.long)
    for i, ids in enumerate(phonemes):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
