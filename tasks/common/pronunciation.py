"""Each text token's pronunciation, for a TTS LM that reads them (model/pronunciation.py).

Words are pronounced by espeak-ng, in process, through the bridge Piper ships (its data included, so
it works offline), and each word's phonemes are shared out among its tokens by where they start in
the word. A token is pronounced only once its word is complete (the next word has begun, or the text
has ended), so training and streaming give every token the same phonemes, whatever comes later."""

from __future__ import annotations

import re
import threading
import unicodedata
from bisect import bisect_left, bisect_right
from functools import lru_cache

from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP
from piper.phonemize_espeak import EspeakPhonemizer
from transformers import PreTrainedTokenizerBase

from omniforge.model.configuration_omni import OmniConfig
from omniforge.model.pronunciation import NO_PHONEME
from omniforge.model.read_write import token_start

# Piper's phoneme table (espeak-ng's IPA, one symbol per code point), shifted past the padding id
PHONEME_IDS = {symbol: ids[0] + 1 + NO_PHONEME for symbol, ids in DEFAULT_PHONEME_ID_MAP.items()}
PHONEME_VOCAB_SIZE = max(PHONEME_IDS.values()) + 1
WORD = re.compile(r"\S+")

_espeak_lock = threading.Lock()  # the bridge holds one voice for the whole process


@lru_cache(maxsize=1)
def _phonemizer() -> EspeakPhonemizer:
    return EspeakPhonemizer()


@lru_cache(maxsize=65536)
def word_phonemes(voice: str, word: str) -> tuple[int, ...]:
    """A written word's phoneme ids as espeak-ng says it alone (symbols outside the table dropped)."""
    with _espeak_lock:
        sentences = _phonemizer().phonemize(voice, word)
    symbols = unicodedata.normalize("NFD", "".join("".join(s) for s in sentences)).strip()
    return tuple(PHONEME_IDS[s] for s in symbols if s in PHONEME_IDS)


class Pronouncer:
    """`Pronounce` for a tokenizer: text ids -> the phonemes of each token whose word is complete."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, voice: str) -> None:
        self.tokenizer, self.voice = tokenizer, voice
        self._pieces: dict[int, str] = {}  # each token's text alone: streaming asks again at every step

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self._decode([token])
        return self._pieces[token]

    def _token_ends(self, text_ids: list[int], text: str) -> list[int]:
        """Where each token ends in `text`: token by token, or by decoding each prefix where a character
        spans tokens (a byte-level piece of a multi-byte letter)."""
        pieces = [self._piece(token) for token in text_ids]
        if "".join(pieces) != text:
            return [len(self._decode(text_ids[: k + 1])) for k in range(len(text_ids))]
        ends, at = [], 0
        for piece in pieces:
            at += len(piece)
            ends.append(at)
        return ends

    def __call__(self, text_ids: list[int], final: bool) -> list[list[int]]:
        text = self._decode(text_ids)
        ends = self._token_ends(text_ids, text)
        starts = [0] + ends[:-1]
        words = [(m.start(), m.end()) for m in WORD.finditer(text)]
        if not final and words and words[-1][1] == len(text):  # the word being written may go on
            ready_to = words.pop()[0]
            text_ids = [t for t, end in zip(text_ids, ends) if end <= ready_to]
        phonemes: list[list[int]] = [[] for _ in text_ids]
        firsts = [token_start(text, start, end) for start, end in zip(starts, ends)][: len(text_ids)]
        for start, end in words:  # a word's tokens: those starting inside it (`firsts` never decreases)
            first, last = bisect_left(firsts, start), bisect_left(firsts, end)
            if first < last:
                self._share(word_phonemes(self.voice, text[start:end]), start, end, firsts[first:last],
                            phonemes[first:last])
        return phonemes

    @staticmethod
    def _share(said: tuple[int, ...], start: int, end: int, token_firsts: list[int], out: list[list[int]]) -> None:
        """Phoneme i of a word goes to the token holding the character at i/len of the way through it
        (`out`: the word's tokens' lists, in order; `token_firsts`: where each of them starts)."""
        for i, phoneme in enumerate(said):
            at = start + (end - start) * i / len(said)
            out[max(bisect_right(token_firsts, at) - 1, 0)].append(phoneme)


def pronouncer_for(config: OmniConfig, tokenizer: PreTrainedTokenizerBase) -> Pronouncer | None:
    """The pronunciations a model's TTS LM reads (None: it reads the text alone)."""
    if not config.phoneme_vocab_size:
        return None
    if config.phoneme_vocab_size != PHONEME_VOCAB_SIZE:
        raise ValueError(f"the model reads {config.phoneme_vocab_size} phoneme ids, this Piper's table has "
                         f"{PHONEME_VOCAB_SIZE}: install the piper-tts it was trained with")
    return Pronouncer(tokenizer, config.pronunciation_voice)
