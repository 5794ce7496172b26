"""The read-write schedule, written once: training builds its interleaved sequences with
`interleave`, and streaming inference asks `write_budget` after each text token it reads.

Fixed (the paper's): read R fused text positions, write W speech tokens, repeat. When the text
ends, read what is left, then `<sep>`, then write speech tokens until end-of-speech.

Aligned: the TTS LM decides when to read. It reads `lookahead` + 1 text tokens, then writes the
speech of the first one and says `<read>` when that token is spoken; `<read>` brings the next token
(or `<sep>` once the text is all read), and so on: the speech it writes is always that of the text
token `lookahead` places behind the newest it read. Training takes each token's share of the speech
from a forced alignment of the words (`token_unit_counts`), so the model learns where it is in the
text from the sequence itself instead of having to find it by attention: a small TTS LM learns to
speak in far fewer steps.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from enum import Enum


class Slot(str, Enum):
    TEXT = "text"      # a fused text position (c_t)
    SPEECH = "speech"  # a speech token, as input and as a supervised target
    SEP = "sep"        # <sep>: the text is finished
    READ = "read"      # <read> (aligned only): the speech of a text token is written (a target only, never an input)
    EOS = "eos"        # end of speech (a target only, never an input)


@dataclass(frozen=True)
class ReadWrite:
    read: int = 3
    write: int = 10
    aligned: bool = False
    lookahead: int = 1

    def __post_init__(self) -> None:
        if self.read < 1 or self.write < 1:
            raise ValueError(f"read and write must be >= 1 (got R={self.read}, W={self.write})")
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0 (got {self.lookahead})")

    def write_budget(self, tokens_read: int) -> float:
        """Speech tokens to write right after the `tokens_read`-th text token was read (aligned: until
        the TTS LM says `<read>`)."""
        if self.aligned:
            return math.inf if tokens_read > self.lookahead else 0
        return self.write if tokens_read % self.read == 0 else 0


def interleave(n_text: int, n_speech: int, schedule: ReadWrite,
               counts: list[int] | None = None) -> list[tuple[Slot, int]]:
    """The TTS LM's sequence for a text of `n_text` tokens and its `n_speech` speech tokens:
    (slot, index into the text or the speech) in order, ending with EOS. Fixed: when the speech runs
    out before the text does, later writes are empty. Aligned: `counts[t]` speech tokens are text
    token t's (they add up to `n_speech`)."""
    if schedule.aligned:
        return _aligned(n_text, n_speech, schedule.lookahead, counts)
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


def _aligned(n_text: int, n_speech: int, lookahead: int, counts: list[int] | None) -> list[tuple[Slot, int]]:
    if counts is None or len(counts) != n_text or sum(counts) != n_speech:
        raise ValueError(f"aligned read-write needs a speech count per text token adding up to the speech "
                         f"({n_text} tokens, {n_speech} speech tokens, counts {counts})")
    read = min(lookahead + 1, n_text)
    slots: list[tuple[Slot, int]] = [(Slot.TEXT, t) for t in range(read)]
    text_done = read == n_text
    if text_done:
        slots.append((Slot.SEP, -1))
    written = 0
    for t in range(n_text):
        slots.extend((Slot.SPEECH, s) for s in range(written, written + counts[t]))
        written += counts[t]
        if not text_done:
            slots += [(Slot.READ, -1), (Slot.TEXT, read) if read < n_text else (Slot.SEP, -1)]
            text_done = read == n_text
            read += 1
    slots.append((Slot.EOS, -1))
    return slots


def token_start(text: str, start: int, end: int) -> int:
    """Where the token spanning text[start:end] starts: its first character that is not a space (its
    last, for a token of spaces only, so it starts inside no word)."""
    while start < end - 1 and text[start].isspace():
        start += 1
    return start


def token_unit_counts(token_starts: list[int], word_chars: list[int], word_starts: list[float],
                      word_ends: list[float], text_length: int, n_speech: int, frame_rate: float) -> list[int]:
    """Each text token's share of the speech, from a forced alignment of the text's words.

    token_starts: the character where each token's first non-space character is; word_chars: where
    each aligned word starts (ascending), said from word_starts to word_ends (seconds). A token's
    speech runs from when its first character is said (its word's start, plus its place in the word
    at the word's pace) to when the next token's is, so a pause belongs to the token before it; the
    first token also has the speech before it, the last one the speech after."""
    def said_at(char: int) -> float:
        word = max(bisect_right(word_chars, char) - 1, 0)
        end = word_chars[word + 1] if word + 1 < len(word_chars) else text_length
        start, stop = word_starts[word], word_ends[word]
        return start + (stop - start) * max(0, char - word_chars[word]) / max(1, end - word_chars[word])

    if not token_starts:
        return []
    bounds = [0]
    for char in token_starts[1:]:
        bounds.append(min(n_speech, max(bounds[-1], round(said_at(char) * frame_rate))))
    bounds.append(n_speech)
    return [b - a for a, b in zip(bounds, bounds[1:])]
