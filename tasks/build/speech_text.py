"""Make chat text speakable: strip markup, spell out numbers and symbols, split long turns.

Text that cannot be read aloud sensibly (code, tables, math) is refused with a reason instead of
being mangled: a spoken-dialogue model should never learn to read out a stack trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import emoji
from num2words import num2words

CODE_FENCE = re.compile(r"```|~~~")
INDENTED_CODE = re.compile(r"(?m)^(?: {4}|\t)\S.*(?:\n(?: {4}|\t)\S.*){2,}")
CODE_TOKENS = re.compile(r"[{};]\s*$|\bdef \w+\(|\bfunction \w*\(|#include\b|=>|\bimport \w+|</?\w+>", re.M)
TABLE_ROW = re.compile(r"(?m)^\s*\|?.*\|.*\|\s*$")
TABLE_RULE = re.compile(r"(?m)^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
MATH = re.compile(r"\$[^$\n]+\$|\\\(|\\\[|\\frac|\\sum|\\int|\^\{|_\{")

URL = re.compile(r"\bhttps?://[^\s)\]]+|\bwww\.[^\s)\]]+")
EMPTY_PARENS = re.compile(r"\(\s*(?:see|source|via|at)?[:\s]*\)", re.I)
MINUS = re.compile(r"(?<![\w\d])-(?=\d)")
MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
MD_EMPHASIS = re.compile(r"(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1")
MD_HEADER = re.compile(r"(?m)^\s{0,3}#{1,6}\s*")
MD_BULLET = re.compile(r"(?m)^\s*(?:[-*+•]|\d+[.)])\s+")
MD_QUOTE = re.compile(r"(?m)^\s*>\s?")
INLINE_CODE = re.compile(r"`([^`]*)`")
HTML_TAG = re.compile(r"<[^>]+>")

CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
UNITS = {
    "km/h": "kilometers per hour", "km²": "square kilometers", "m²": "square meters", "mph": "miles per hour", "km": "kilometers", "cm": "centimeters",
    "mm": "millimeters", "m": "meters", "kg": "kilograms", "g": "grams", "mg": "milligrams",
    "lb": "pounds", "lbs": "pounds", "ml": "milliliters", "l": "liters", "ft": "feet", "mi": "miles",
    "°C": "degrees Celsius", "°F": "degrees Fahrenheit", "%": "percent", "h": "hours", "min": "minutes",
    "s": "seconds", "GB": "gigabytes", "MB": "megabytes",
}
SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number ", "×": " times ",
           "÷": " divided by ", "°": " degrees ", "/": " ", "|": " ", "*": " ", "_": " ", "~": " about ",
           "<": " less than ", ">": " more than "}
NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
CURRENCY_AMOUNT = re.compile(rf"([$€£¥])\s?({NUMBER})")
UNIT_AMOUNT = re.compile(rf"({NUMBER})\s?({'|'.join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))})(?![\w])")
ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
YEAR = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b")
PLAIN_NUMBER = re.compile(rf"(?<![\w.])({NUMBER})(?![\w])")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Unspeakable(ValueError):
    """Text that should not be spoken; `reason` is a short code for the rejects table."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def check_speakable(text: str) -> None:
    if CODE_FENCE.search(text) or INDENTED_CODE.search(text) or len(CODE_TOKENS.findall(text)) >= 2:
        raise Unspeakable("code", "the text contains source code")
    if TABLE_RULE.search(text) or len(TABLE_ROW.findall(text)) >= 3:
        raise Unspeakable("table", "the text contains a table")
    if MATH.search(text):
        raise Unspeakable("math", "the text contains formulas")


def _number_words(text: str) -> str:
    value = float(text.replace(",", ""))
    return num2words(int(value) if value.is_integer() and "." not in text else value)


def spell_out(text: str) -> str:
    """Numbers, currency, units and symbols as words ("$5" -> "five dollars", "3 km" -> ...)."""
    text = MINUS.sub("minus ", text)
    text = CURRENCY_AMOUNT.sub(
        lambda m: num2words(float(m[2].replace(",", "")), to="currency", currency=CURRENCY[m[1]]), text)
    text = UNIT_AMOUNT.sub(lambda m: f"{_number_words(m[1])} {UNITS[m[2]]}", text)
    text = ORDINAL.sub(lambda m: num2words(int(m[1]), to="ordinal"), text)
    text = YEAR.sub(lambda m: num2words(int(m[1]), to="year"), text)
    text = PLAIN_NUMBER.sub(lambda m: _number_words(m[1]), text)
    for symbol, words in SYMBOLS.items():
        text = text.replace(symbol, words)
    return text


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
    return " ".join(line if line[-1] in ".!?:;," else f"{line}." for line in lines)


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


def to_spoken(text: str, max_segment_chars: int, max_turn_chars: int) -> SpokenText:
    """The whole normalization of one turn; raises Unspeakable with a reason."""
    check_speakable(text)
    spoken = re.sub(r"\s+", " ", spell_out(strip_markup(text))).strip()
    spoken = re.sub(r"[()\[\]]", "", spoken)
    spoken = re.sub(r"\s+([.,!?;:])", r"\1", spoken)
    if not re.search(r"[A-Za-z]", spoken):
        raise Unspeakable("empty", "nothing speakable is left after normalization")
    truncated = False
    if len(spoken) > max_turn_chars:
        kept = ""
        for sentence in SENTENCE_END.split(spoken):
            if len(kept) + len(sentence) + 1 > max_turn_chars:
                break
            kept = f"{kept} {sentence}".strip()
        spoken, truncated = kept or spoken[:max_turn_chars].rsplit(" ", 1)[0], True
    return SpokenText(spoken, tuple(split_sentences(spoken, max_segment_chars)), truncated)
