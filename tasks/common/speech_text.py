"""Make chat text speakable: flatten markdown into sentences, spell out numbers, money, units,
dates and symbols (NeMo's text normalization grammars), split long turns.

Text that cannot be read aloud sensibly (code, tables, formulas) is refused with a reason instead
of being mangled: a spoken-dialogue model should never learn to read out a stack trace. So is text
in a writing system the voices do not speak (`unsupported_language`).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import emoji

from omniforge.config.build import TextConfig

# Every pattern below costs time linear in the text: each match attempt is bounded by its line or
# by an explicit length, so no input (a line of 1 MB of "|", of "<", of newlines) makes it backtrack
# quadratically. Tables are recognized line by line in Python (`_is_table_row`, `_is_table_rule`).
CODE_FENCE = re.compile(r"```|~~~")
INDENTED_CODE = re.compile(r"(?m)^(?: {4}|\t)\S.*(?:\n(?: {4}|\t)\S.*){2,}")
CODE_TOKENS = re.compile(r"[{};][ \t]*$|\bdef \w+\(|\bfunction \w*\(|#include\b|=>|\bimport \w+|</?\w+>", re.M)
TABLE_CELL_RULE = re.compile(r":?-{3,}:?")
# TeX: inline $...$ that opens on a non-digit and holds an operator ("$x^2 = 4$", never "$3 or $4",
# which is money), display $$, \( \[, or TeX commands
INLINE_DOLLARS = re.compile(r"\$(?=[^\s\d$])(?=([^$\n]{1,200})\$)")
MATH_OPERATOR = re.compile(r"[\\^_{}=]")
TEX = re.compile(r"\$\$|\\\(|\\\[|\\(?:frac|sum|int|sqrt)\b|\^\{|_\{")

URL = re.compile(r"\bhttps?://[^\s)\]]+|\bwww\.[^\s)\]]+")
EMPTY_PARENS = re.compile(r"\([\s:]*(?:(?:see|source|via|at)[\s:]*)?\)", re.I)
MD_LINK = re.compile(r"!?\[([^][]{0,500})\]\([^()\n]{0,2000}\)")
MD_EMPHASIS = re.compile(r"(\*{1,3}|_{1,3}|~~)(?=\S)(.{1,500}?)(?<=\S)\1")
MD_HEADER = re.compile(r"(?m)^[ \t]{0,3}#{1,6}[ \t]*")
MD_BULLET = re.compile(r"(?m)^[ \t]*(?:[-*+•]|\d{1,9}[.)])[ \t]+")
MD_QUOTE = re.compile(r"(?m)^[ \t]*>[ \t]?")
INLINE_CODE = re.compile(r"`([^`]*)`")
HTML_TAG = re.compile(r"<[^<>]{1,500}>")

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Unspeakable(ValueError):
    """Text that should not be spoken; `reason` is a short code for the rejects table."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _is_table_row(line: str) -> bool:
    """`| a | b |` or `a | b |`: a line that ends in a cell border and has another."""
    line = line.strip()
    return line.endswith("|") and line.count("|") >= 2


def _is_table_rule(line: str) -> bool:
    """`|---|:---:|`: two or more cells of dashes (alignment colons allowed)."""
    cells = line.strip().removeprefix("|").removesuffix("|").split("|")
    return len(cells) >= 2 and all(TABLE_CELL_RULE.fullmatch(cell.strip()) for cell in cells)


def _has_math(text: str) -> bool:
    return bool(TEX.search(text)) or any(MATH_OPERATOR.search(m.group(1)) for m in INLINE_DOLLARS.finditer(text))


def check_speakable(text: str) -> None:
    if CODE_FENCE.search(text) or INDENTED_CODE.search(text) or len(CODE_TOKENS.findall(text)) >= 2:
        raise Unspeakable("code", "the text contains source code")
    lines = text.splitlines()
    if any(_is_table_rule(line) for line in lines) or sum(map(_is_table_row, lines)) >= 3:
        raise Unspeakable("table", "the text contains a table")
    if _has_math(text):
        raise Unspeakable("math", "the text contains formulas")


NEEDS_NORMALIZING = re.compile(r"[\d$€£¥%&@#+=/°§]")
NORMALIZER_LOGGER = "NeMo-text-processing"


@functools.cache
def english_normalizer(cache_dir: str):
    """NeMo's English text normalization grammars (numbers, ordinals, money, measures, dates,
    times, abbreviations); compiled once (~40 s) into `cache_dir`, loaded from there after (~1 s)."""
    from nemo_text_processing.text_normalization.normalize import Normalizer

    logging.getLogger(NORMALIZER_LOGGER).setLevel(logging.WARNING)
    directory = Path(cache_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    return Normalizer(input_case="cased", lang="en", cache_dir=str(directory))


def spell_out(text: str, cache_dir: str) -> str:
    """Numbers, currency, units, dates and symbols as words ("$5" -> "five dollars"); text without
    any is returned as is (the grammars cost ~0.1 s per sentence)."""
    if not NEEDS_NORMALIZING.search(text):
        return text
    try:
        return english_normalizer(cache_dir).normalize(text, punct_post_process=True)
    except Exception as err:  # noqa: BLE001 - the grammars' failures are pynini errors of several types
        raise Unspeakable("unnormalizable", f"the normalizer failed ({type(err).__name__}: {err})") from err


def dominant_script(text: str) -> str | None:
    """The Unicode script most of the text's letters are in (LATIN, CJK, CYRILLIC, HANGUL...)."""
    scripts = Counter(unicodedata.name(ch, "?").split(" ")[0] for ch in text if ch.isalpha())
    return scripts.most_common(1)[0][0] if scripts else None


def strip_markup(text: str) -> str:
    text = MD_LINK.sub(r"\1", text)
    text = EMPTY_PARENS.sub("", URL.sub("", text))
    text = INLINE_CODE.sub(r"\1", text)
    text = HTML_TAG.sub(" ", text)
    text = MD_HEADER.sub("", text)
    text = MD_QUOTE.sub("", text)
    text = MD_BULLET.sub("", text)
    for _ in range(2):  # nested emphasis (***a*** or **_a_**)
        text = MD_EMPHASIS.sub(r"\2", text)
    text = emoji.replace_emoji(text, replace="")
    # list items and headings become sentences
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line if line[-1] in ".!?:;,。！？；：，" else f"{line}." for line in lines)


def split_sentences(text: str, max_chars: int) -> list[str]:
    """Greedy packing of whole sentences into segments of at most max_chars (a sentence longer
    than that is cut at commas, then at spaces)."""
    pieces: list[str] = []
    for sentence in SENTENCE_END.split(text):
        while len(sentence) > max_chars:
            cut = sentence.rfind(", ", 0, max_chars)
            cut = cut + 1 if cut > 0 else sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    segments: list[str] = []
    for piece in pieces:
        if segments and len(segments[-1]) + 1 + len(piece) <= max_chars:
            segments[-1] = f"{segments[-1]} {piece}"
        else:
            segments.append(piece)
    return segments


@dataclass(frozen=True)
class SpokenText:
    text: str
    segments: tuple[str, ...]
    truncated: bool


def to_spoken(text: str, config: TextConfig, scripts: frozenset[str] = frozenset({"LATIN"})) -> SpokenText:
    """The whole normalization of one turn; raises Unspeakable with a reason. `scripts`: the
    writing systems the voices speak (`voices.speakable_scripts`). Raw text past `max_raw_chars` is cut
    before any markup is read: the spoken turn keeps at most `max_turn_chars` of it anyway."""
    cut = len(text) > config.max_raw_chars
    text = text[:config.max_raw_chars]
    check_speakable(text)
    script = dominant_script(text)
    if script is not None and script not in scripts:
        raise Unspeakable("unsupported_language", f"the text is in {script} script; the voices speak "
                          f"{', '.join(sorted(scripts))}")
    flat, cut_flat = cut_at_sentence(strip_markup(text), config.max_turn_chars)  # spelling out only lengthens it
    spoken = spell_out(flat, config.normalizer_cache) if script == "LATIN" else flat
    spoken = re.sub(r"\s+", " ", spoken).strip()
    spoken = re.sub(r"[()\[\]]", "", spoken)
    spoken = re.sub(r"\s+([.,!?;:])", r"\1", spoken)
    if not any(ch.isalpha() for ch in spoken):
        raise Unspeakable("empty", "nothing speakable is left after normalization")
    spoken, cut_spoken = cut_at_sentence(spoken, config.max_turn_chars)
    return SpokenText(spoken, tuple(split_sentences(spoken, config.max_segment_chars)), cut or cut_flat or cut_spoken)


def cut_at_sentence(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` characters at a sentence end (at a space when its first sentence
    is longer), and whether it was cut."""
    if len(text) <= limit:
        return text, False
    kept = ""
    for sentence in SENTENCE_END.split(text):
        if len(kept) + len(sentence) + 1 > limit:
            break
        kept = f"{kept} {sentence}".strip()
    return kept or text[:limit].rsplit(" ", 1)[0], True
