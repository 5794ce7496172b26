"""Streaming speech-to-speech generation with KV caches on both LMs, batch size >= 1, answers
joining and leaving the batch at step boundaries (`StreamingBatch`; `stream_generate` is its
fixed-batch use).

After every LLM step, each item's new text token is fused (gate fusion) and queued for the TTS
LM (one that reads pronunciations gets a token once its word is complete); `ReadWrite.write_budget`
says how many speech tokens to write then. The TTS LM never re-reads its prefix: each forward call
feeds only the new positions (padding the batch where an item has fewer, masked out). Events come
out as they happen: text tokens, chunks of speech units, ends.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from omniforge.model.growing_cache import CachedLM, PromptHead
from omniforge.model.modeling_omni import OmniModel
from omniforge.model.pronunciation import Pronounce, phoneme_rows
from omniforge.model.slot_cache import SlotCacheSettings, SlotLM


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
    # the length guard: at most this many speech tokens per text token read so far (None: off), so a TTS
    # LM that never says end-of-speech stops near the text's length instead of at max_speech_tokens
    max_units_per_text_token: float | None = None
    # after its first chunk, an answer writes at most this many speech tokens per batch step (None: all
    # its budget allows), so one answer's long write (its speech after the text ended) does not hold up
    # every other answer's step, and a joining answer's first audio
    speech_per_step: int | None = None
    text: SamplingSettings = SamplingSettings()
    speech: SamplingSettings = SamplingSettings()
    # fixed-size KV caches whose decode steps replay as CUDA graphs (None: eager caches that grow, the
    # CPU's way and the reference); both emit the same tokens
    slot_cache: SlotCacheSettings | None = None


@dataclass
class StreamEvent:
    kind: Literal["text", "speech", "end"]
    item: Hashable  # the prompt's index (stream_generate) or the key it was added with (StreamingBatch)
    tokens: list[int] = field(default_factory=list)  # text ids, or unit ids (0-based) for speech


def sampling_generator(model: torch.nn.Module, seed: int) -> torch.Generator:
    """A seeded generator on the model's device: sampling draws where the logits are."""
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


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
    final: bool = False        # <sep> gone in: write until EOS
    done: bool = False
    written: int = 0
    text_read: int = 0         # text positions gone in so far (the length guard's measure)
    chunk: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None  # at the last fed position
    # text read while speech was still owed (a step's writes are capped): it waits here, with the
    # budget it brings, so the TTS LM's sequence keeps the read-write order
    later: deque[tuple[torch.Tensor, float, bool]] = field(default_factory=deque)

    def read(self, embedding: torch.Tensor, budget: float) -> None:
        """Queue a text position and what it lets be written."""
        self.later.append((embedding, budget, False))
        self.release()

    def end_text(self, sep: torch.Tensor) -> None:
        """Queue `<sep>`: after it, write until end-of-speech."""
        self.later.append((sep, math.inf, True))
        self.release()

    def release(self) -> None:
        """What was read goes in once the speech owed before it is written."""
        while self.later and self.budget <= 0:
            embedding, budget, sep = self.later.popleft()
            self.pending.append(embedding)
            self.budget += budget
            if sep:
                self.final = True
            else:
                self.text_read += 1


@dataclass
class _Answer:
    """One conversation's answer in a running batch: its LLM side and its voice."""

    key: Hashable
    logits: torch.Tensor   # the LLM's next-token logits
    hidden: torch.Tensor   # and its last hidden state (gate fusion input)
    reading: bool = True   # the LLM is still writing text
    n_read: int = 0
    voice: _Voice = field(default_factory=_Voice)
    forced: list[int] | None = None  # the text to say (teacher-forced) instead of the LLM's own
    llm_states: bool = True          # the TTS LM reads gate-fused LLM states; False: its text embeddings alone
    said: list[int] = field(default_factory=list)               # the text tokens written so far
    states: list[torch.Tensor] = field(default_factory=list)    # the LLM states of those not yet read by the voice

    @property
    def finished(self) -> bool:
        return not self.reading and self.voice.done


class StreamingBatch:
    """Answers generated together: every LLM step and every TTS forward covers all running ones.
    An answer joins at a step boundary (its prompt prefilled on its own, its caches then merged
    into the batch's) and leaves as soon as its text and speech have both ended, so a server
    answers many conversations at once, not one after another."""

    def __init__(self, model: OmniModel, settings: GenerationSettings = GenerationSettings(),
                 generator: torch.Generator | None = None, pronounce: Pronounce | None = None) -> None:
        """`pronounce`: the text's pronunciations, for a TTS LM that reads them."""
        if model.speech_generator.pronunciation is not None and pronounce is None:
            raise ValueError("this model's TTS LM reads pronunciations: StreamingBatch needs `pronounce`")
        self.model, self.settings, self.generator, self.pronounce = model, settings, generator, pronounce
        self.device = next(model.parameters()).device
        config, tts = model.config, model.speech_generator
        self.units = slice(config.unit_offset, config.unit_offset + config.unit_vocab_size)
        self.sep = tts.embed(torch.tensor([config.sep_token_id], device=self.device))[0]
        self.answers: list[_Answer] = []
        self.llm: CachedLM | SlotLM | None = None
        self.voice_lm: CachedLM | SlotLM | None = None
        self.head: PromptHead | None = None
        slot = settings.slot_cache
        if slot is not None:  # made once: their graphs are captured once and replayed for every answer
            self.llm = SlotLM(model.llm, slot.slots, slot.llm_length, (*slot.graph_lengths, slot.prefill_chunk),
                              compile="llm" in slot.compile)
            self.voice_lm = SlotLM(tts.model, slot.slots, slot.tts_length, slot.graph_lengths,
                                   compile="tts" in slot.compile)

    def __len__(self) -> int:
        return len(self.answers)

    @torch.no_grad()
    def add(self, keys: list[Hashable], input_ids: list[torch.Tensor], speech: list[torch.Tensor],
            forced: list[list[int]] | None = None, llm_states: bool = True) -> None:
        """Start answering these prompts (speech spliced at their placeholders). `forced`: per prompt,
        the text tokens to say instead of the LLM's (the LLM reads them, so its states are those it has
        on that text); `llm_states` False: the TTS LM reads the text's embeddings alone (stage-1 TTS)."""
        model = self.model
        input_ids, speech = [ids.to(self.device) for ids in input_ids], [s.to(self.device) for s in speech]
        head = self._head_for(input_ids)
        if head is None:
            llm = CachedLM(model.llm, len(keys), self.device)
        else:
            llm = head.start(len(keys))
            input_ids = [ids[len(head.ids):] for ids in input_ids]
        embeds, mask, _ = model.splice(input_ids, speech, left_pad=True)
        voice_lm = CachedLM(model.speech_generator.model, len(keys), self.device)
        if self.settings.slot_cache is not None:
            self.llm.absorb(llm)
            self.voice_lm.absorb(voice_lm)
            logits, hidden = self._prefill_slots(embeds, mask)
        else:
            out = llm.feed(embeds, mask, hidden=True)
            logits, hidden = out.logits[:, -1], out.hidden_states[-1][:, -1]
            if self.llm is None:
                self.llm, self.voice_lm = llm, voice_lm
            else:
                self.llm.absorb(llm)
                self.voice_lm.absorb(voice_lm)
        self.answers += [_Answer(key, logits[i], hidden[i], forced=None if forced is None else list(forced[i]),
                                 llm_states=llm_states) for i, key in enumerate(keys)]

    def _prefill_slots(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The joining rows' prompts (the last rows of the slot cache) through the LLM in calls of
        `prefill_chunk` positions (one replayed graph each), left-padded to a whole number of them so
        that each row's last position is real; the running rows read nothing meanwhile. Returns the
        joining rows' next-token logits and last hidden states."""
        chunk = self.settings.slot_cache.prefill_chunk
        joining, length = mask.shape
        total = math.ceil(length / chunk) * chunk
        live = len(self.llm.rows)
        padded = embeds.new_zeros(live, total, embeds.shape[-1])
        padded[live - joining:, total - length:] = embeds
        padded_mask = torch.zeros(live, total, dtype=torch.long)
        padded_mask[live - joining:, total - length:] = mask.cpu()
        for start in range(0, total, chunk):
            out = self.llm.feed(padded[:, start:start + chunk], padded_mask[:, start:start + chunk], hidden=True)
        return out.logits[live - joining:, -1], out.hidden_states[-1][live - joining:, -1]

    def _head_for(self, input_ids: list[torch.Tensor]) -> "PromptHead | None":
        """The cached head these prompts all start with (computed now if they share one), or None."""
        def starts(head: torch.Tensor) -> bool:
            return all(len(ids) > len(head) and torch.equal(ids[:len(head)], head) for ids in input_ids)

        if self.head is not None and starts(self.head.ids):
            return self.head
        first = input_ids[0]
        placeholders = (first == self.model.config.speech_token_id).nonzero().flatten()
        if len(placeholders) == 0 or placeholders[0] == 0 or not starts(first[:placeholders[0]]):
            return None
        self.head = PromptHead(self.model.llm, first[:placeholders[0]])
        return self.head

    @torch.no_grad()
    def step(self) -> list[StreamEvent]:
        """One step: each reading answer's next text token, the speech its budget allows, one LLM
        forward; then the finished answers leave the batch."""
        model, settings, tts, config = self.model, self.settings, self.model.speech_generator, self.model.config
        events: list[StreamEvent] = []
        reading = [i for i, a in enumerate(self.answers) if a.reading]
        tokens = [0] * len(self.answers)  # each answer's token for the LLM to read (0: it reads none)
        if reading:
            picked = pick(torch.stack([self.answers[i].logits for i in reading]), settings.text,
                          self.generator).tolist()  # the step's one wait for the device
            for row, i in enumerate(reading):
                forced = self.answers[i].forced
                if forced is not None:
                    n = self.answers[i].n_read
                    picked[row] = forced[n] if n < len(forced) else config.eos_token_id
            for row, i in enumerate(reading):
                answer, token = self.answers[i], picked[row]
                tokens[i] = token
                if token == config.eos_token_id or answer.n_read >= settings.max_text_tokens:
                    answer.reading = False
                    if not answer.voice.done:
                        self._read(answer, final=True)
                        answer.voice.end_text(self.sep)
                    continue
                events.append(StreamEvent("text", answer.key, [token]))
                answer.n_read += 1
                if answer.voice.done:  # its speech hit max_speech_tokens; the text goes on alone
                    continue
                answer.said.append(token)
                answer.states.append(answer.hidden)
                self._read(answer, final=False)
        keys = [a.key for a in self.answers]
        events += [StreamEvent(e.kind, keys[e.item], e.tokens) for e in _write(
            self.voice_lm, [a.voice for a in self.answers], tts, self.units, config.eos_token_id, settings, self.generator)]
        still = [i for i, a in enumerate(self.answers) if a.reading]
        if still:
            mask = torch.tensor([a.reading for a in self.answers], dtype=torch.long)  # on the host: no wait
            ids = torch.tensor(tokens, device=self.device)
            out = self.llm.feed(model.llm.get_input_embeddings()(ids)[:, None], mask[:, None], hidden=True)
            for i in still:
                self.answers[i].logits, self.answers[i].hidden = out.logits[i, -1], out.hidden_states[-1][i, -1]
        self._drop_finished()
        return events

    def _read(self, answer: _Answer, final: bool) -> None:
        """Give the voice the text tokens it may read now: each new one, or, reading pronunciations,
        those whose words are complete (all of them once the text is `final`)."""
        first = len(answer.said) - len(answer.states)  # the tokens the voice has
        phonemes = None
        ready = len(answer.said)
        if self.pronounce is not None:
            pronounced = self.pronounce(answer.said, final)
            ready = len(pronounced)
            phonemes = phoneme_rows(pronounced[first:ready]).to(self.device)
        if ready <= first:
            return
        ids = torch.tensor(answer.said[first:ready], device=self.device)
        states = torch.stack(answer.states[: ready - first]) if answer.llm_states else None
        del answer.states[: ready - first]
        inputs = self.model.speech_generator.text_inputs(ids, states, phonemes)
        for k, embedding in enumerate(inputs, start=first + 1):
            answer.voice.read(embedding, self.model.schedule.write_budget(k))

    def _drop_finished(self) -> None:
        keep = [i for i, a in enumerate(self.answers) if not a.finished]
        if len(keep) == len(self.answers):
            return
        self.answers = [self.answers[i] for i in keep]
        if not keep and self.settings.slot_cache is None:
            self.llm = self.voice_lm = None
            return
        self.llm.select(keep)
        self.voice_lm.select(keep)

    def remove(self, key: Hashable) -> None:
        """Stop an answer now (its listener left)."""
        for answer in self.answers:
            if answer.key == key:
                answer.reading, answer.voice.done = False, True
        self._drop_finished()


@torch.no_grad()
def stream_generate(model: OmniModel, input_ids: list[torch.Tensor], speech: list[torch.Tensor],
                    settings: GenerationSettings = GenerationSettings(),
                    generator: torch.Generator | None = None, forced: list[list[int]] | None = None,
                    llm_states: bool = True, pronounce: Pronounce | None = None) -> Iterator[StreamEvent]:
    """Answer a batch of prompts (speech spliced at placeholders) in text and speech at once, or say
    the `forced` texts (see `StreamingBatch.add`); events name their prompt by its index."""
    batch = StreamingBatch(model, settings, generator, pronounce)
    batch.add(list(range(len(input_ids))), input_ids, speech, forced, llm_states)
    while len(batch):
        yield from batch.step()


def _write(voice_lm: CachedLM, voices: list[_Voice], tts, units: slice, eos: int,
           settings: GenerationSettings, generator: torch.Generator | None) -> Iterator[StreamEvent]:
    """Feed every item's pending inputs, then sample speech while budgets last, one token for every
    writing item per TTS forward (picked together). Returns when no item can write without reading
    more text, or only items that wrote `settings.speech_per_step` tokens this step (their first chunk
    aside) could; those flush what they wrote and go on next step."""
    wrote = [0] * len(voices)

    def capped(i: int, voice: _Voice) -> bool:
        cap = settings.speech_per_step
        return cap is not None and wrote[i] >= cap and voice.written >= tts.config.stream_write

    while True:
        fed = _feed_pending(voice_lm, voices)
        progressed = False
        writers = []
        for i, voice in enumerate(voices):
            if voice.done or voice.budget <= 0 or voice.logits is None or voice.pending:
                continue
            if capped(i, voice):
                continue
            if voice.written < _speech_limit(voice, settings):
                writers.append(i)
            elif voice.final:  # the text is all read and the speech is as long as it may be: end it
                voice.done, voice.logits = True, None
                progressed = True
                yield from _flush(i, voice)
                yield StreamEvent("end", i)
            else:  # wait for more text
                voice.budget = 0
                voice.release()
                yield from _flush(i, voice)
        if writers:
            progressed = True
            for i in writers:
                wrote[i] += 1
            yield from _write_tokens(writers, voices, tts, units, eos, settings, generator)
        if not fed and not progressed:
            for i, voice in enumerate(voices):
                yield from _flush(i, voice)
            return


def _write_tokens(writers: list[int], voices: list[_Voice], tts, units: slice, eos: int,
                  settings: GenerationSettings, generator: torch.Generator | None) -> Iterator[StreamEvent]:
    """The next speech token of each writing item: units only, or end-of-speech once its text is all read."""
    logits = torch.stack([voices[i].logits for i in writers])
    allowed = torch.full_like(logits, -math.inf)
    allowed[:, units] = 0
    allowed[[row for row, i in enumerate(writers) if voices[i].final], eos] = 0
    read = tts.config.read_token_id  # aligned read-write: the TTS LM asks for the next text token
    if read is not None:
        allowed[[row for row, i in enumerate(writers) if not voices[i].final], read] = 0
    tokens = pick(logits + allowed, settings.speech, generator)
    embeds = tts.embed(tokens)
    for row, (i, token) in enumerate(zip(writers, tokens.tolist(), strict=True)):
        voice = voices[i]
        voice.logits = None
        if token == eos or voice.written >= settings.max_speech_tokens:
            voice.done = True
            yield from _flush(i, voice)
            yield StreamEvent("end", i)
            continue
        if token == read:  # its speech is written: the next text (or <sep>) goes in, or waits for the LLM
            voice.budget = 0
            voice.release()
            continue
        voice.chunk.append(token - units.start)
        voice.written += 1
        voice.budget -= 1
        voice.pending.append(embeds[row])
        voice.release()
        if voice.budget <= 0 or len(voice.chunk) >= tts.config.stream_write:
            yield from _flush(i, voice)


def _speech_limit(voice: _Voice, settings: GenerationSettings) -> float:
    """How many speech tokens this voice may have written by now (the length guard)."""
    if settings.max_units_per_text_token is None:
        return math.inf
    return settings.max_units_per_text_token * max(voice.text_read, 1)


def _flush(item: int, voice: _Voice) -> Iterator[StreamEvent]:
    if voice.chunk:
        yield StreamEvent("speech", item, voice.chunk)
        voice.chunk = []


def _feed_pending(voice_lm: CachedLM, voices: list[_Voice]) -> bool:
    """One TTS forward over every item's pending inputs (right-padded within the call)."""
    longest = max(len(v.pending) for v in voices)
    if longest == 0:
        return False
    sample = next(p for v in voices for p in v.pending)
    embeds = sample.new_zeros(len(voices), longest, sample.shape[-1])
    counts = torch.tensor([len(v.pending) for v in voices])
    mask = (torch.arange(longest)[None, :] < counts[:, None]).long()  # on the host: no wait for the device
    for i, voice in enumerate(voices):
        if voice.pending:
            embeds[i, : len(voice.pending)] = torch.stack(voice.pending)
    logits = voice_lm.feed(embeds, mask).logits
    for i, voice in enumerate(voices):
        if voice.pending:
            voice.logits = logits[i, len(voice.pending) - 1]
            voice.pending = []
    return True
