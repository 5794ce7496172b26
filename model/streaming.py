"""Streaming speech-to-speech generation with KV caches on both LMs, batch size >= 1.

After every LLM step, each item's new text token is fused (gate fusion) and queued for the TTS
LM; `ReadWrite.write_budget` says how many speech tokens to write then. The TTS LM never re-reads
its prefix: each forward call feeds only the new positions (padding the batch where an item has
fewer, masked out). Events come out as they happen: text tokens, chunks of speech units, ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from omniforge.model.modeling_omni import OmniModel


@dataclass(frozen=True)
class SamplingSettings:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass(frozen=True)
class GenerationSettings:
    max_text_tokens: int = 256
    max_speech_tokens: int = 2048
    text: SamplingSettings = SamplingSettings()
    speech: SamplingSettings = SamplingSettings()


@dataclass
class StreamEvent:
    kind: Literal["text", "speech", "end"]
    item: int
    tokens: list[int] = field(default_factory=list)  # text ids, or unit ids (0-based) for speech


def pick(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy or temperature/top-k/top-p sampling over the last dimension."""
    if not settings.do_sample:
        return logits.argmax(-1)
    logits = logits / max(settings.temperature, 1e-5)
    if settings.top_k > 0:
        kth = logits.topk(min(settings.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if settings.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) > settings.top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, -math.inf))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@dataclass
class _Voice:
    """One item's TTS state."""

    pending: list[torch.Tensor] = field(default_factory=list)  # input embeddings not yet fed
    budget: float = 0          # speech tokens to write before reading more
    final: bool = False        # <sep> queued: write until EOS
    done: bool = False
    written: int = 0
    chunk: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None  # at the last fed position


class _CachedLM:
    """A causal LM fed a few new positions per call, per item, with a growing KV cache."""

    def __init__(self, lm: torch.nn.Module, batch: int, device: torch.device) -> None:
        self.lm = lm
        self.past = None
        self.mask = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)

    def feed(self, embeds: torch.Tensor, mask: torch.Tensor, hidden: bool = False):
        """embeds (B, L, H), mask (B, L) of real (1) and padding (0) positions."""
        self.mask = torch.cat([self.mask, mask], dim=1)
        position_ids = self.positions[:, None] + mask.cumsum(-1) - 1
        self.positions = self.positions + mask.sum(-1)
        out = self.lm(inputs_embeds=embeds, attention_mask=self.mask, position_ids=position_ids.clamp(min=0),
                      cache=self.past, use_cache=True, output_hidden_states=hidden)
        self.past = out.cache
        return out


@torch.no_grad()
def stream_generate(model: OmniModel, input_ids: list[torch.Tensor], speech: list[torch.Tensor],
                    settings: GenerationSettings = GenerationSettings(),
                    generator: torch.Generator | None = None) -> Iterator[StreamEvent]:
    """Answer a batch of prompts (speech spliced at placeholders) in text and speech at once."""
    config, tts = model.config, model.speech_generator
    schedule = model.schedule
    batch, device = len(input_ids), next(model.parameters()).device
    embeds, mask, _ = model.splice(input_ids, speech, left_pad=True)
    llm = _CachedLM(model.llm, batch, device)
    voice_lm = _CachedLM(tts.model, batch, device)
    voices = [_Voice() for _ in range(batch)]
    reading = torch.ones(batch, dtype=torch.bool, device=device)
    n_read = [0] * batch
    units = slice(config.unit_offset, config.unit_offset + config.unit_vocab_size)
    sep = tts.embed(torch.tensor([config.sep_token_id], device=device))[0]

    out = llm.feed(embeds, mask, hidden=True)
    while True:
        if reading.any():
            tokens = pick(out.logits[:, -1], settings.text, generator)
            fused = tts.text_inputs(tokens, out.hidden_states[-1][:, -1])
            for i in reading.nonzero().flatten().tolist():
                if int(tokens[i]) == config.eos_token_id or n_read[i] >= settings.max_text_tokens:
                    reading[i] = False
                    if not voices[i].done:
                        voices[i].pending.append(sep)
                        voices[i].final, voices[i].budget = True, math.inf
                    continue
                yield StreamEvent("text", i, [int(tokens[i])])
                n_read[i] += 1
                if voices[i].done:  # its speech hit max_speech_tokens; the text goes on alone
                    continue
                voices[i].pending.append(fused[i])
                voices[i].budget += schedule.write_budget(n_read[i])
        yield from _write(voice_lm, voices, tts, units, config.eos_token_id, settings, generator)
        if not reading.any():
            break
        out = llm.feed(model.llm.get_input_embeddings()(tokens)[:, None], reading.long()[:, None], hidden=True)
    while not all(v.done for v in voices):
        yield from _write(voice_lm, voices, tts, units, config.eos_token_id, settings, generator)


def _write(voice_lm: _CachedLM, voices: list[_Voice], tts, units: slice, eos: int,
           settings: GenerationSettings, generator: torch.Generator | None) -> Iterator[StreamEvent]:
    """Feed every item's pending inputs, then sample speech while budgets last. Returns when no
    item can write without reading more text."""
    while True:
        fed = _feed_pending(voice_lm, voices)
        progressed = False
        for i, voice in enumerate(voices):
            if voice.done or voice.budget <= 0 or voice.logits is None or voice.pending:
                continue
            logits = voice.logits.clone()
            allowed = torch.full_like(logits, -math.inf)
            allowed[units] = 0
            if voice.final:
                allowed[eos] = 0
            token = int(pick((logits + allowed)[None], settings.speech, generator)[0])
            voice.logits = None
            progressed = True
            if token == eos or voice.written >= settings.max_speech_tokens:
                voice.done = True
                yield from _flush(i, voice)
                yield StreamEvent("end", i)
                continue
            voice.chunk.append(token - units.start)
            voice.written += 1
            voice.budget -= 1
            voice.pending.append(tts.embed(torch.tensor([token], device=logits.device))[0])
            if voice.budget <= 0 or len(voice.chunk) >= tts.config.stream_write:
                yield from _flush(i, voice)
        if not fed and not progressed:
            return


def _flush(item: int, voice: _Voice) -> Iterator[StreamEvent]:
    if voice.chunk:
        yield StreamEvent("speech", item, voice.chunk)
        voice.chunk = []


def _feed_pending(voice_lm: _CachedLM, voices: list[_Voice]) -> bool:
    """One TTS forward over every item's pending inputs (right-padded within the call)."""
    longest = max(len(v.pending) for v in voices)
    if longest == 0:
        return False
    sample = next(p for v in voices for p in v.pending)
    embeds = sample.new_zeros(len(voices), longest, sample.shape[-1])
    mask = torch.zeros(len(voices), longest, dtype=torch.long, device=sample.device)
    for i, voice in enumerate(voices):
        if voice.pending:
            embeds[i, : len(voice.pending)] = torch.stack(voice.pending)
            mask[i, : len(voice.pending)] = 1
    logits = voice_lm.feed(embeds, mask).logits
    for i, voice in enumerate(voices):
        if voice.pending:
            voice.logits = logits[i, len(voice.pending) - 1]
            voice.pending = []
    return True
