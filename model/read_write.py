"""The read-write schedule, written once: training builds its interleaved sequences with
`interleave`, and streaming inference asks `write_budget` after each text token it reads.

Read R fused text positions, write W speech tokens, repeat. When the text ends, read what is
left, then `<sep>`, then write speech tokens until end-of-speech.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Slot(str, Enum):
    TEXT = "text"      # a fused text position (c_t)
    SPEECH = "speech"  # a speech token, as input and as a supervised target
    SEP = "sep"        # <sep>: the text is finished
    EOS = "eos"        # end of speech (a target only, never an input)


@dataclass(frozen=True)
class ReadWrite:
    read: int = 3
    write: int = 10

    def __post_init__(self) -> None:
        if self.read < 1 or self.write < 1:
            raise ValueError(f"read and write must be >= 1 (got R={self.read}, W={self.write})")

    def write_budget(self, tokens_read: int) -> int:
        """Speech tokens to write right after the `tokens_read`-th text token was read."""
        return self.write if tokens_read % self.read == 0 else 0


def interleave(n_text: int, n_speech: int, schedule: ReadWrite) -> list[tuple[Slot, int]]:
    """The TTS LM's sequence for a text of `n_text` tokens and its `n_speech` speech tokens:
    (slot, index into the text or the speech) in order, ending with EOS. When the speech runs out
    before the text does, later writes are empty."""
    slots: list[tuple[Slot, int]] = []
    written = 0
    for t in range(n_text):
        slots.append((Slot.TEXT, t))
        for _ in range(min(schedule.write_budget(t + 1), n_speech - written)):
            slots.append((Slot.SPEECH, written))
            written += 1
    slots.append((Slot.SEP, -1))
    slots.extend((Slot.SPEECH, s) for s in range(written, n_speech))
    slots.append((Slot.EOS, -1))
    return slots
