"""A causal LM decoding from a KV cache of fixed size, so that its step can be replayed as a CUDA graph.

Eager decoding with a growing cache is bound by kernel launches and host work on a GPU (one step
of a 7B LLM took ~50 ms where reading its weights takes ~5). Here the cache is preallocated as
`slots` rows of `length` positions; each row is one answer and keeps its own position, so answers
join (their prefilled history copied into a free slot) and leave (the slot freed) without moving
anyone else's cache. Everything a step needs besides its inputs (write positions, masks, rotary
positions) is computed on the device from a positions tensor that the step itself advances, so a
step of L new positions is one fixed-shape call: on CUDA it is captured once per L as a graph and
replayed. Rows that are free or have fewer than L new positions write to the last position, a
scratch position that no query sees.

It plugs into transformers' own extension points: a `Cache` whose layers write at per-row
positions, and the attention mask passed ready-made (a mapping per layer type).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from omniforge.model.cuda_graph import Replayed


@dataclass(frozen=True)
class SlotCacheSettings:
    """Sizes of the fixed caches (None in `GenerationSettings`: the eager, growing ones); a run's
    come from its config (`SlotCacheConfig`)."""

    slots: int                          # answers decoded at once (free slots still compute: size it to the load)
    llm_length: int                     # positions a row of the LLM's cache holds (prompt, speech, text)
    tts_length: int                     # and of the TTS LM's (text read and speech written)
    graph_lengths: tuple[int, ...] = (1, 2)  # new positions per row that a replayed graph covers (CUDA)
    prefill_chunk: int = 64             # a joining prompt goes through the LLM's cache this many positions a call
    # LMs ("llm", "tts") whose replayed steps are compiled first (torch.compile: fused kernels, so fewer of
    # them per step; a minute or so of compiling per step shape when the first answer arrives)
    compile: tuple[str, ...] = ()


@dataclass
class Fed:
    """What a feed returns for the live rows, in their order (copies: graph outputs are reused)."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor] | None = None  # (last layer's,) when asked for


class _SlotLayer(CacheLayerMixin):
    """One layer's keys and values, (slots, heads, length, dim), written where the owner says."""

    is_compileable = True
    is_sliding = False

    def __init__(self, owner: "SlotCache") -> None:
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        slots, heads = key_states.shape[:2]
        self.keys = key_states.new_zeros(slots, heads, self.owner.length, key_states.shape[-1])
        self.values = value_states.new_zeros(slots, heads, self.owner.length, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        index = self.owner.write_index[:, None, :, None]
        self.keys.scatter_(2, index.expand_as(key_states), key_states)
        self.values.scatter_(2, index.expand_as(value_states), value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.length, 0

    def get_seq_length(self) -> int:
        return self.owner.length

    def get_max_length(self) -> int:
        return self.owner.length


class SlotCache(Cache):
    """Per layer, keys and values of `slots` rows by `length` positions; `write_index` (slots, L)
    says where this call's new positions go."""

    def __init__(self, layers: int, length: int) -> None:
        self.length = length
        self.write_index: torch.Tensor | None = None
        super().__init__(layers=[_SlotLayer(self) for _ in range(layers)])


class SlotLM:
    """A causal LM (transformers, full attention) over a `SlotCache`: `feed` the live rows' new
    positions, `absorb` rows prefilled elsewhere, `select` which rows live on. The same interface
    as the eager `growing_cache.CachedLM`, so a `StreamingBatch` runs on either."""

    def __init__(self, lm: torch.nn.Module, slots: int, length: int, graph_lengths: tuple[int, ...] = (),
                 compile: bool = False) -> None:
        config = lm.config
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ["full_attention"]):
            raise ValueError("SlotLM supports full-attention layers only (no sliding window)")
        self.lm, self.slots, self.length = lm, slots, length
        self.device = next(lm.parameters()).device
        self.dtype = lm.get_input_embeddings().weight.dtype
        self.width = config.hidden_size
        self.cache = SlotCache(config.num_hidden_layers, length)
        self.positions = torch.zeros(slots, dtype=torch.long, device=self.device)  # real positions held per slot
        self.held = [0] * slots     # the same, on the host (checked without waiting for the device)
        self.rows: list[int] = []   # the live rows' slots, in the batch's order
        self._row_index: torch.Tensor | None = None
        self.free = list(range(slots))
        self.use_graphs = self.device.type == "cuda"
        self.graph_lengths = set(graph_lengths)
        self.compile = compile
        self.graphs: dict[tuple[int, bool], Replayed] = {}
        self.calls: Counter[tuple[int, bool]] = Counter()  # feeds by (new positions, replayed): where time goes
        self._initialise()

    @torch.no_grad()
    def _initialise(self) -> None:
        """Allocate every layer's cache now (a captured graph must not allocate them), and let
        transformers install its hidden-state hooks (under a lock, which a compiled step cannot take)."""
        for hidden in (False, True):
            self._step(torch.zeros(self.slots, 1, self.width, dtype=self.dtype, device=self.device),
                       torch.zeros(self.slots, 1, dtype=torch.long, device=self.device), hidden=hidden)

    # ------------------------------------------------------------------ the step
    def _step(self, embeds: torch.Tensor, mask: torch.Tensor, hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All slots' next positions: embeds (slots, L, H), mask (slots, L) of real (1) and padding
        (0) positions, real ones first or last. Only device work, so that it can be captured."""
        count = mask.cumsum(-1)
        reached = self.positions[:, None] + count                   # positions held after each new one
        scratch = self.length - 1
        self.cache.write_index = torch.where(mask.bool(), reached - 1, scratch)
        keys = torch.arange(self.length, device=self.device)
        visible = keys[None, None, :] < reached.clamp(min=1)[:, :, None]  # a padding query sees at least one key
        out = self.lm(inputs_embeds=embeds, attention_mask={"full_attention": visible[:, None]},
                      position_ids=(reached - 1).clamp(min=0), cache=self.cache, use_cache=True,
                      output_hidden_states=hidden)
        self.positions.add_(mask.sum(-1))
        return out.logits, out.hidden_states[-1] if hidden else None

    @torch.no_grad()
    def feed(self, embeds: torch.Tensor, mask: torch.Tensor, hidden: bool = False) -> Fed:
        """embeds (n, L, H) and mask (n, L) for the n live rows, in their order (a mask on the host
        costs no wait for the device)."""
        rows = self._rows()
        counts = mask.cpu().sum(-1).tolist()
        if any(self.held[slot] + count >= self.length for slot, count in zip(self.rows, counts)):
            raise ValueError(f"a row's history would pass the cache's {self.length - 1} positions: "
                             f"raise the slot cache length (settings.slot_cache)")
        for slot, count in zip(self.rows, counts):
            self.held[slot] += count
        mask = mask.to(self.device, non_blocking=True)
        full_embeds = embeds.new_zeros(self.slots, embeds.shape[1], self.width).index_copy_(0, rows, embeds)
        full_mask = mask.new_zeros(self.slots, mask.shape[1]).index_copy_(0, rows, mask)
        replay = self.use_graphs and embeds.shape[1] in self.graph_lengths
        self.calls[embeds.shape[1], replay] += 1
        if replay:
            key = (embeds.shape[1], hidden)
            if key not in self.graphs:
                self.graphs[key] = self._capture(full_embeds, full_mask, hidden)
            logits, states = self.graphs[key](full_embeds, full_mask)
        else:
            logits, states = self._step(full_embeds, full_mask, hidden)
        return Fed(logits[rows], None if states is None else (states[rows],))

    def _capture(self, embeds: torch.Tensor, mask: torch.Tensor, hidden: bool) -> Replayed:
        """The step for these shapes as a graph (compiled first if asked); its warm-up feeds only
        padding, so no slot's position moves."""
        step = partial(self._step, hidden=hidden)
        if self.compile:
            step = torch.compile(step, fullgraph=True, dynamic=False)
        return Replayed(step, torch.zeros_like(embeds), torch.zeros_like(mask))

    # ------------------------------------------------------------------ rows
    def _rows(self) -> torch.Tensor:
        """The live rows' slots on the device (made again only when the rows change)."""
        if self._row_index is None:
            self._row_index = torch.tensor(self.rows, dtype=torch.long, device=self.device)
        return self._row_index

    def select(self, keep: list[int]) -> None:
        """Keep these rows, in this order; the others' slots are freed."""
        if len(set(keep)) != len(keep):
            raise ValueError("a slot cache cannot copy a row")
        kept = [self.rows[i] for i in keep]
        self.free += [slot for slot in self.rows if slot not in kept]
        self.rows, self._row_index = kept, None

    @torch.no_grad()
    def absorb(self, other) -> None:
        """Append the rows of an eager `CachedLM` (prefilled on its own) after ours: each row's
        history, its padding left out, goes to the start of a free slot."""
        count = len(other.mask)
        if count > len(self.free):
            raise ValueError(f"{len(self.rows)} answers are running and {count} more would join, but the slot "
                             f"cache holds {self.slots}: raise settings.slot_cache.slots")
        slots, self.free = self.free[:count], self.free[count:]
        layers = [] if other.past is None else [(layer.keys, layer.values) for layer in other.past.layers]
        for row, slot in enumerate(slots):
            real = other.mask[row].bool()
            held = int(real.sum())
            if held >= self.length:
                raise ValueError(f"a prompt of {held} positions does not fit the cache's {self.length - 1}")
            for target, (keys, values) in zip(self.cache.layers, layers):
                target.keys[slot, :, :held] = keys[row][:, real]
                target.values[slot, :, :held] = values[row][:, real]
            self.positions[slot], self.held[slot] = held, held
        self.rows, self._row_index = self.rows + slots, None
