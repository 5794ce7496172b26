"""The loss of each training stage as one module, so DDP/FSDP wrap a plain `forward(batch)`.

    s2t: speech-to-text, the LLM's loss on the assistant tokens (adapter + LLM train)
    tts: text -> speech units, the TTS LM on its own text embeddings (no LLM states)
    s2s: LLM states -> gate fusion -> TTS LM, on the same read-write interleaved sequences that
         streaming inference produces (the LLM runs frozen, without gradients)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from omniforge.model.modeling_omni import IGNORE_INDEX, OmniModel


@dataclass
class StageBatch:
    """A batch of dialogues, every field a tensor (stages use what they need)."""

    input_ids: list[torch.Tensor]     # chat-formatted dialogues with speech placeholders
    labels: list[torch.Tensor]        # assistant tokens; IGNORE_INDEX elsewhere
    turn_marks: list[torch.Tensor]    # k on the text tokens of a dialogue's k-th assistant turn
    features: torch.Tensor | None     # (utterances, n_mels, T) log-mels of the user turns, in order
    mel_lengths: torch.Tensor | None
    text_ids: list[torch.Tensor]      # per assistant turn (dialogue-major): its text tokens
    units: list[torch.Tensor]         # per assistant turn: its speech units
    read_units: list[torch.Tensor] | None = None  # the units as the TTS LM reads them (noised); None: `units`
    unit_counts: list[torch.Tensor] | None = None  # per assistant turn: each text token's units (aligned read-write)
    phonemes: list[torch.Tensor] | None = None  # per assistant turn: each text token's phonemes (pronunciations)

    def to(self, device: torch.device) -> "StageBatch":
        def move(value):
            if isinstance(value, list):
                return [v.to(device) for v in value]
            return None if value is None else value.to(device)

        return StageBatch(**{name: move(getattr(self, name)) for name in self.__dataclass_fields__})

    def target_tokens(self, stage: str) -> int:
        """Tokens that carry loss in this stage (for tokens/s)."""
        if stage == "s2t":
            return int(sum(int((label != IGNORE_INDEX).sum()) for label in self.labels))
        return int(sum(len(u) + 1 for u in self.units))


def set_trainable(model: nn.Module, prefixes: list[str]) -> dict[str, int]:
    """Freeze everything but the parameters under `prefixes`; returns parameter counts."""
    matched = dict.fromkeys(prefixes, 0)
    counts = {"trainable": 0, "frozen": 0}
    for name, parameter in model.named_parameters():
        hits = [p for p in prefixes if name == p or name.startswith(p + ".")]
        parameter.requires_grad_(bool(hits))
        counts["trainable" if hits else "frozen"] += parameter.numel()
        for prefix in hits:
            matched[prefix] += 1
    unknown = [p for p, n in matched.items() if n == 0 and p not in getattr(model, "optional_parts", ())]
    if unknown:
        raise ValueError(f"trainable: {unknown} match no parameter of the model")
    return counts


class StageObjective(nn.Module):
    """`chunk_tokens`: labelled positions whose logits are computed at once (0: all of them; see
    `labelled_cross_entropy`)."""

    def __init__(self, model: OmniModel, stage: str, chunk_tokens: int = 0) -> None:
        super().__init__()
        if stage not in ("s2t", "tts", "s2s"):
            raise ValueError(f"unknown stage {stage!r}")
        self.model, self.stage, self.chunk_tokens = model, stage, chunk_tokens

    def forward(self, batch: StageBatch) -> torch.Tensor:
        if self.stage == "s2t":
            return self.model.s2t_loss(batch.input_ids, batch.features, batch.mel_lengths, batch.labels,
                                       self.chunk_tokens)
        llm_states = self.assistant_states(batch) if self.stage == "s2s" else None
        return self.model.tts_loss(batch.text_ids, batch.units, llm_states, batch.read_units, batch.unit_counts,
                                   batch.phonemes, self.chunk_tokens)

    @torch.no_grad()
    def assistant_states(self, batch: StageBatch) -> list[torch.Tensor]:
        """For each assistant turn, the LLM's last hidden state at the positions that predicted its
        text tokens (the h_t of gate fusion), teacher-forced."""
        model = self.model
        speech = model.speech_embeddings(batch.features, batch.mel_lengths)
        embeds, mask, marks = model.splice(batch.input_ids, speech, batch.turn_marks)
        hidden = model.llm(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        states = []
        for row in range(len(batch.input_ids)):
            turns = int(marks[row].max()) + 1 if (marks[row] != IGNORE_INDEX).any() else 0
            for turn in range(turns):
                positions = (marks[row] == turn).nonzero().flatten()
                states.append(hidden[row, positions - 1])
        if [len(s) for s in states] != [len(t) for t in batch.text_ids]:
            raise ValueError("assistant turns in the batch do not line up with their text tokens")
        return states
