"""The streaming engine: speech in -> encoder -> LLM text -> TTS LM (read-write) -> unit chunks ->
units-to-audio chunks -> audio out, with a timestamp on every event.

Time zero is the end of the user's speech (the whole utterance is in hand), so the first audio
chunk's timestamp is the paper's latency. The decoder pulls unit chunks from the generator as they
are written, so audio starts while the LLM is still writing text.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from omniforge.model.mel import WhisperLogMel
from omniforge.model.modeling_omni import OmniModel
from omniforge.model.padded_speech import PaddedSpeech
from omniforge.model.speech_encoder import max_input_frames
from omniforge.model.streaming import GenerationSettings, stream_generate
from omniforge.tasks.common.pronunciation import pronouncer_for
from omniforge.tasks.train.text_tokenizer import ChatFormat
from omniforge.tasks.units.decoders.interface import UnitDecoder


@dataclass
class TimedEvent:
    kind: str        # "text", "units", "audio" or "end"
    seconds: float   # since the end of the user's speech
    size: int        # tokens, units or audio samples


@dataclass
class AnswerTrace:
    text: str
    units: list[int]
    audio: np.ndarray
    sample_rate: int
    events: list[TimedEvent] = field(default_factory=list)

    def first(self, kind: str) -> float | None:
        return next((e.seconds for e in self.events if e.kind == kind), None)

    @property
    def latency(self) -> float | None:
        """End of the user's speech -> first audio chunk (the paper's latency)."""
        return self.first("audio")

    @property
    def text_end(self) -> float | None:
        times = [e.seconds for e in self.events if e.kind == "text"]
        return times[-1] if times else None

    @property
    def compute_seconds(self) -> float:
        return self.events[-1].seconds if self.events else 0.0

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / self.sample_rate


class StreamingEngine:
    def __init__(self, model: OmniModel, chat: ChatFormat, decoder: UnitDecoder,
                 settings: GenerationSettings, generator: torch.Generator | None = None) -> None:
        self.model, self.chat, self.decoder, self.settings = model.eval(), chat, decoder, settings
        self.generator = generator  # of the sampling, where the settings sample
        self.features = WhisperLogMel(model.config.encoder_config.num_mel_bins)
        self.pronounce = pronouncer_for(model.config, chat.tokenizer)
        self.padded_speech: PaddedSpeech | None = None  # on a GPU, made at the first turn (it captures a graph)

    @torch.no_grad()
    def prompt(self, history: list[tuple[str, str]], speech: list[np.ndarray],
               typed: Collection[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The chat prompt of a conversation ending with the user's turn, and the encoded speech of
        every spoken user turn (spliced at the prompt's placeholders)."""
        return self.text_prompt(history, typed), self.encode_speech(speech) if speech else []

    def text_prompt(self, history: list[tuple[str, str]], typed: Collection[int] = ()) -> torch.Tensor:
        """The chat prompt's token ids, with a placeholder where each user turn's speech goes (the
        text of the user turns at `typed` indices instead)."""
        return self.chat.encode(history, generation_prompt=True, typed=typed).input_ids

    @property
    def max_turn_seconds(self) -> float:
        """The longest user turn the speech encoder accepts (30 s for Whisper)."""
        return max_input_frames(self.model.speech_encoder) * self.features.hop / self.features.sample_rate

    @torch.no_grad()
    def encode_speech(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """16 kHz waves -> their adapter outputs: in one padded batch, or on a GPU each wave at the
        encoder's longest input, one replayed graph a wave (`PaddedSpeech`)."""
        parameter = next(self.model.parameters())
        if parameter.device.type == "cuda":
            if self.padded_speech is None:
                self.padded_speech = PaddedSpeech(self.model)
            return [self.padded_speech(*self.features.batch([torch.from_numpy(w)])) for w in waves]
        padded, lengths = self.features.batch([torch.from_numpy(w) for w in waves])
        return self.model.speech_embeddings(padded.to(parameter.dtype), lengths)

    @torch.no_grad()
    def answer(self, history: list[tuple[str, str]], speech: list[np.ndarray],
               typed: Collection[int] = ()) -> AnswerTrace:
        """Answer the last user turn. history: (role, text) turns ending with the user's (whose text is
        unused unless its index is in `typed`); speech: the 16 kHz wave of every spoken user turn, in order."""
        began = time.perf_counter()
        prompt, spoken = self.prompt(history, speech, typed)
        return self._trace(began, prompt, spoken)

    @torch.no_grad()
    def say(self, text: str, llm_states: bool = True) -> AnswerTrace:
        """Say `text` as an answer: the LLM reads it (teacher-forced) after a prompt with no user turn,
        and the TTS LM speaks it from the gate-fused states, exactly as it speaks its own answers; with
        `llm_states` False, from the text's embeddings alone (what stage-1 TTS training taught it)."""
        began = time.perf_counter()
        return self._trace(began, self.text_prompt([]), [], forced=self.chat.text_ids(text), llm_states=llm_states)

    def _trace(self, began: float, prompt: torch.Tensor, spoken: list[torch.Tensor],
               forced: list[int] | None = None, llm_states: bool = True) -> AnswerTrace:
        """Stream one answer through the decoder, timestamping every event since `began`."""
        events: list[TimedEvent] = []
        text_ids: list[int] = []
        units: list[int] = []

        def mark(kind: str, size: int) -> None:
            events.append(TimedEvent(kind, time.perf_counter() - began, size))

        def unit_chunks() -> Iterator[list[int]]:
            for event in stream_generate(self.model, [prompt], spoken, self.settings, self.generator,
                                         forced=None if forced is None else [forced], llm_states=llm_states,
                                         pronounce=self.pronounce):
                if event.kind == "text":
                    text_ids.extend(event.tokens)
                    mark("text", len(event.tokens))
                elif event.kind == "speech":
                    units.extend(event.tokens)
                    mark("units", len(event.tokens))
                    yield event.tokens

        chunks = []
        for chunk in self.decoder.stream(unit_chunks()):
            chunks.append(chunk)
            mark("audio", len(chunk))
        mark("end", 0)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        text = self.chat.tokenizer.decode(text_ids, skip_special_tokens=True).strip()
        return AnswerTrace(text, units, audio, self.decoder.sample_rate, events)
