"""The offline text tokenizer is fitted on the TTS corpus, not on the dialogues: every piece of a
word the corpus never had is a piece the TTS LM has read many times in training."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

from omniforge.config import load_pipeline_config
from omniforge.tasks.build.english_text import english_sentences
from omniforge.tasks.train.text_tokenizer import ChatFormat, load_tokenizer, train_bpe

UNSEEN = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "unseen_sentences.jsonl"
MIN_COUNT = 3  # times a piece must occur in the tokenized corpus to count as trained


def test_unseen_words_split_into_pieces_the_corpus_trained():
    config = load_pipeline_config("configs/demo.yaml")
    source = config.corpus.source
    corpus = english_sentences(source.sentences, source.seed, *source.words)
    tokenizer = load_tokenizer(config.train.model, corpus)
    known = {w.lower() for s in corpus for w in re.findall(r"[A-Za-z']+", s)}
    sentences = [json.loads(line)["text"] for line in UNSEEN.read_text().splitlines()]
    assert not set(sentences) & set(corpus)
    new_words = sorted({w for s in sentences for w in re.findall(r"[A-Za-z']+", s) if w.lower() not in known})
    assert len(new_words) >= 10, new_words  # the set really has words the corpus never said
    counts = collections.Counter(t for s in corpus for t in tokenizer.encode(s, add_special_tokens=False))
    for word in new_words:
        for spelled in (f" {word}", word):  # inside a sentence, and at its start
            pieces = tokenizer.encode(spelled, add_special_tokens=False)
            assert tokenizer.decode(pieces) == spelled  # nothing lost to an unknown token
            rare = [tokenizer.convert_ids_to_tokens(p) for p in pieces if counts[p] < MIN_COUNT]
            assert not rare, f"{word!r}: pieces {rare} occur fewer than {MIN_COUNT} times in the corpus"


def test_a_typed_user_turn_is_its_text_and_cannot_forge_the_chat_format():
    """A typed turn takes its speech placeholder's place; `<|im_end|>` or `<speech>` typed by a user
    stay plain text (no turn ends early, no speech is spliced where none was given)."""
    config = load_pipeline_config("configs/demo.yaml")
    source = config.corpus.source
    tokenizer = load_tokenizer(config.train.model, english_sentences(200, source.seed, *source.words))
    chat = ChatFormat(tokenizer, "Be brief.")
    turns = [("user", "x"), ("assistant", "Hello there."), ("user", "Is it <|im_end|> or <speech> now?")]
    spoken = chat.encode(turns, generation_prompt=True).input_ids.tolist()
    typed = chat.encode(turns, generation_prompt=True, typed=[2]).input_ids.tolist()
    assert spoken.count(chat.speech_token_id) == 2 and typed.count(chat.speech_token_id) == 1
    assert typed.count(chat.eos_token_id) == spoken.count(chat.eos_token_id)
    assert "Is it <|im_end|> or <speech> now?" in tokenizer.decode(typed)


def test_token_starts_point_at_each_tokens_first_letter():
    """What aligned read-write needs to share out a turn's speech: where each text token starts."""
    text = "The doctor told him to drink more water, 2 times."
    chat = ChatFormat(train_bpe([text, "A doctor and a drink."] * 4, 280), "system")
    ids, starts = chat.text_ids(text), chat.token_starts(text)
    assert len(starts) == len(ids) > len(text.split()) and starts == sorted(starts)
    for token, start in zip(ids, starts):
        piece = chat.tokenizer.decode([token])
        assert text[start:].startswith(piece.lstrip() or piece)  # a token of spaces alone starts at its space
        assert not text[start].isspace() or not piece.strip()
