"""The fixed-size slot cache (the GPU's graph-replayed decoding, run eagerly here) against the eager
growing cache: every live row's logits are those of the same row decoded alone, through joins into
free slots, padded multi-position feeds and leaves."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from omniforge.model.slot_cache import SlotCacheSettings, SlotLM
from omniforge.model.growing_cache import CachedLM
from omniforge.model.streaming import GenerationSettings, StreamingBatch
from tests.tiny_model import three_prompts, tiny_model

WIDTH = 32


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=50, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(config).double().eval()


class Alone:
    """One row decoded on its own through the eager cache: the reference."""

    def __init__(self, lm: torch.nn.Module, embeds: torch.Tensor) -> None:
        self.cached = CachedLM(lm, 1, embeds.device)
        self.logits = self.feed(embeds)

    def feed(self, embeds: torch.Tensor) -> torch.Tensor:
        out = self.cached.feed(embeds[None], torch.ones(1, len(embeds), dtype=torch.long))
        return out.logits[0]


def prefill(lm: torch.nn.Module, prompts: list[torch.Tensor]) -> CachedLM:
    """Prompts of different lengths prefilled together, left-padded (the way `StreamingBatch.add` does)."""
    longest = max(len(p) for p in prompts)
    embeds = torch.zeros(len(prompts), longest, WIDTH, dtype=torch.float64)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        embeds[row, longest - len(prompt):] = prompt
        mask[row, longest - len(prompt):] = 1
    cached = CachedLM(lm, len(prompts), embeds.device)
    cached.feed(embeds, mask)
    return cached


@torch.no_grad()
def test_rows_joining_feeding_and_leaving_match_each_row_decoded_alone(lm):
    generator = torch.Generator().manual_seed(1)

    def positions(n: int) -> torch.Tensor:
        return torch.randn(n, WIDTH, generator=generator, dtype=torch.float64)

    slot = SlotLM(lm, slots=3, length=40)
    alone: dict[str, Alone] = {}
    live: list[str] = []

    def join(keys: list[str], lengths: list[int]) -> None:
        prompts = [positions(n) for n in lengths]
        for key, prompt in zip(keys, prompts):
            alone[key] = Alone(lm, prompt)
        slot.absorb(prefill(lm, prompts))
        live.extend(keys)

    def feed(counts: list[int]) -> None:
        """Each live row gets `counts[i]` new positions (right-padded to the longest), compared with alone."""
        longest = max(counts)
        embeds = torch.zeros(len(live), longest, WIDTH, dtype=torch.float64)
        mask = torch.zeros(len(live), longest, dtype=torch.long)
        new = {key: positions(n) for key, n in zip(live, counts)}
        for row, key in enumerate(live):
            embeds[row, : counts[row]] = new[key]
            mask[row, : counts[row]] = 1
        logits = slot.feed(embeds, mask).logits
        for row, key in enumerate(live):
            if counts[row]:
                expected = alone[key].feed(new[key])
                torch.testing.assert_close(logits[row, : counts[row]], expected, rtol=1e-9, atol=1e-9)

    join(["a"], [5])
    for _ in range(3):
        feed([1])
    join(["b", "c"], [4, 7])            # joined from one left-padded prefill
    feed([2, 1, 2])                     # "b" has one new position, padded
    feed([1, 0, 1])                     # "b" reads nothing this call
    slot.select([0, 2])                 # "b" leaves
    live.remove("b")
    feed([1, 1])
    join(["d"], [3])                    # into the slot "b" freed
    assert sorted(slot.rows) == [0, 1, 2]
    feed([1, 2, 1])
    feed([1, 1, 1])


@torch.no_grad()
def test_a_full_cache_and_a_history_past_its_length_are_refused_with_the_setting_to_raise(lm):
    slot = SlotLM(lm, slots=1, length=8)
    slot.absorb(prefill(lm, [torch.zeros(6, WIDTH, dtype=torch.float64)]))
    with pytest.raises(ValueError, match="slot_cache.slots"):
        slot.absorb(prefill(lm, [torch.zeros(2, WIDTH, dtype=torch.float64)]))
    slot.feed(torch.zeros(1, 1, WIDTH, dtype=torch.float64), torch.ones(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="slot cache length"):
        slot.feed(torch.zeros(1, 1, WIDTH, dtype=torch.float64), torch.ones(1, 1, dtype=torch.long))


@torch.no_grad()
@pytest.mark.parametrize("prefill_chunk", [64, 8])
def test_a_streaming_batch_on_slot_caches_computes_what_the_eager_one_does(prefill_chunk):
    """The same answers joining and leaving two batches, one on growing caches and one on slot
    caches (prompts prefilled in chunks): after every step each answer's next-token logits (LLM)
    and speech logits (TTS LM) agree, and so do the events."""
    model = tiny_model(seed=3).double()
    prompts, speech = three_prompts(model)
    limits = dict(max_text_tokens=10, max_speech_tokens=24)
    eager = StreamingBatch(model, GenerationSettings(**limits))
    slot = StreamingBatch(model, GenerationSettings(**limits, slot_cache=SlotCacheSettings(
        slots=3, llm_length=128, tts_length=64, prefill_chunk=prefill_chunk)))

    def agree() -> None:
        for ours, theirs in zip(slot.answers, eager.answers, strict=True):
            torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-9, atol=1e-9)
            if theirs.voice.logits is not None:
                torch.testing.assert_close(ours.voice.logits, theirs.voice.logits, rtol=1e-9, atol=1e-9)

    def step() -> None:
        assert slot.step() == eager.step()
        agree()

    for batch in (eager, slot):
        batch.add(["a"], prompts[:1], speech[:1])
    agree()
    for _ in range(3):
        step()
    for batch in (eager, slot):
        batch.add(["b", "c"], prompts[1:], speech[1:])
    agree()
    step()
    for batch in (eager, slot):
        batch.remove("c")
    while len(eager):
        step()
    assert not len(slot)
