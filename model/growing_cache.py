"""The eager KV cache that grows: a causal LM fed a few new positions per call per item (the CPU's
way and the reference for `slot_cache.SlotLM`), and the prompt head every conversation shares,
prefilled once."""

from __future__ import annotations

import copy

import torch


class CachedLM:
    """A causal LM fed a few new positions per call, per item, with a growing KV cache. Rows can
    join (another cache's, left-padded to the same history length, the padding masked out) and leave."""

    def __init__(self, lm: torch.nn.Module, batch: int, device: torch.device) -> None:
        self.lm = lm
        self.past = None
        self.mask = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)

    def feed(self, embeds: torch.Tensor, mask: torch.Tensor, hidden: bool = False):
        """embeds (B, L, H), mask (B, L) of real (1) and padding (0) positions."""
        mask = mask.to(self.mask.device)
        self.mask = torch.cat([self.mask, mask], dim=1)
        position_ids = self.positions[:, None] + mask.cumsum(-1) - 1
        self.positions = self.positions + mask.sum(-1)
        out = self.lm(inputs_embeds=embeds, attention_mask=self.mask, position_ids=position_ids.clamp(min=0),
                      cache=self.past, use_cache=True, output_hidden_states=hidden)
        self.past = out.cache
        return out

    def select(self, keep: list[int]) -> None:
        """Keep these rows, in this order (the others' answers ended; a row named twice is copied)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        if self.past is not None:
            self.past.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]

    def absorb(self, other: "CachedLM") -> None:
        """Append `other`'s rows after ours."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        rows = (len(self.mask), len(other.mask))
        self.mask = torch.cat([left_pad(self.mask, length, 1), left_pad(other.mask, length, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        template = self.past if self.past is not None else other.past
        if template is None:
            return
        parts = [self._layers(cache, template, n) for cache, n in ((self.past, rows[0]), (other.past, rows[1]))]
        for layer, mine, theirs in zip(template.layers, *parts):
            layer.keys = torch.cat([left_pad(mine[0], length, 2), left_pad(theirs[0], length, 2)])
            layer.values = torch.cat([left_pad(mine[1], length, 2), left_pad(theirs[1], length, 2)])
        self.past = template

    @staticmethod
    def _layers(cache, template, rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (keys, values); an LM never fed yet has empty ones shaped like `template`'s."""
        if cache is not None:
            return [(layer.keys, layer.values) for layer in cache.layers]
        return [(layer.keys.new_zeros(rows, layer.keys.shape[1], 0, layer.keys.shape[3]),
                 layer.values.new_zeros(rows, layer.values.shape[1], 0, layer.values.shape[3])) for layer in template.layers]


class PromptHead:
    """The text a prompt has before its first speech turn (the chat format's system turn and user
    header, the same in every conversation), prefilled once: answers joining later start from a copy
    of its KV cache and prefill only the rest of their prompt."""

    def __init__(self, lm: torch.nn.Module, ids: torch.Tensor) -> None:
        self.ids = ids
        self.cached = CachedLM(lm, 1, ids.device)
        self.cached.feed(lm.get_input_embeddings()(ids)[None], torch.ones(1, len(ids), dtype=torch.long, device=ids.device))

    def start(self, batch: int) -> CachedLM:
        """A cached LM of `batch` rows that has read the head (its one row, repeated)."""
        lm = copy.copy(self.cached)
        lm.past = copy.deepcopy(self.cached.past)
        lm.select([0] * batch)
        return lm


def left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros before the existing history along `dim`, up to `length` positions."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
