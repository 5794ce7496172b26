"""A TTS LM that reads pronunciations: espeak-ng's phonemes of each text token (through Piper's bridge,
offline), given to the TTS LM once the token's word is complete, the same in training and streaming."""

from __future__ import annotations

import pytest
import torch

from omniforge.model.pronunciation import phoneme_rows
from omniforge.model.streaming import GenerationSettings, StreamingBatch, stream_generate
from omniforge.tasks.common.pronunciation import PHONEME_VOCAB_SIZE, WORD, Pronouncer, word_phonemes
from omniforge.tasks.train.text_tokenizer import train_bpe
from tests.tiny_model import UNITS, tiny_model

UNSEEN = "Bogota welcomed Persian carpets, didn't it?"  # no word of it is in the tokenizer's text
# letters of two bytes the tokenizer never saw: each is split across two byte-level tokens, which decode alone
# to nothing whole, so the pronouncer finds where tokens end by decoding prefixes
ACCENTED = "Bogotá's naïve café served crème brûlée."


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(["The doctor told him to drink more water.", "The capital of Denmark is Copenhagen."] * 10, 300)


def pronouncing_model(tokenizer, **overrides):
    return tiny_model(seed=1, text_vocab=len(tokenizer), phoneme_vocab_size=PHONEME_VOCAB_SIZE,
                      pronunciation_voice="en-us", **overrides).double()


@pytest.mark.parametrize("text", [UNSEEN, ACCENTED])
def test_each_word_of_unseen_text_is_said_in_its_tokens_once_the_word_is_complete(tokenizer, text):
    pronounce = Pronouncer(tokenizer, "en-us")
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    full = pronounce(ids, final=True)
    assert len(full) == len(ids) > len(text.split())  # unseen words split into several byte pieces
    assert all(0 < p < PHONEME_VOCAB_SIZE for token in full for p in token)
    ends = [len(tokenizer.decode(ids[: k + 1])) for k in range(len(ids))]
    for word in WORD.finditer(text):  # a word's phonemes, in order, shared out among its own tokens
        tokens = [k for k, end in enumerate(ends) if word.start() < end and (k == 0 or ends[k - 1] < word.end())
                  and tokenizer.decode(ids[k]).strip()]
        assert [p for k in tokens for p in full[k]] == list(word_phonemes("en-us", word.group()))
        assert word_phonemes("en-us", word.group())  # every word is pronounced
    pronounced = [len(pronounce(ids[:n], final=False)) for n in range(len(ids) + 1)]
    for n, ready in enumerate(pronounced):  # streaming: what is pronounced is what training reads
        assert pronounce(ids[:n], final=False) == full[:ready]
        held = tokenizer.decode(ids[ready:n]).strip()
        assert ready == n or (held and " " not in held)  # held back: only the last word, which may go on
    assert pronounced[-1] < len(ids)  # the last word waits for the text's end
    assert all(a <= b for a, b in zip(pronounced, pronounced[1:]))


def test_a_pronouncing_tts_lm_needs_the_phonemes(tokenizer):
    model = pronouncing_model(tokenizer)
    with pytest.raises(ValueError, match="pronunciations"):
        StreamingBatch(model, GenerationSettings())
    with pytest.raises(ValueError, match="phonemes"):
        model.tts_loss([torch.tensor([40, 41])], [torch.tensor([1, 2, 3])])
    generator = model.speech_generator
    ids = torch.tensor([40, 40])
    read = generator.text_inputs(ids, None, torch.tensor([[0, 0], [7, 0]]))
    assert torch.equal(read[0], generator.embed(ids)[0])  # no phoneme adds nothing
    assert not torch.equal(read[1], read[0])


def test_streaming_speaks_what_the_training_sequence_of_its_pronunciations_predicts(tokenizer):
    model = pronouncing_model(tokenizer)
    pronounce = Pronouncer(tokenizer, "en-us")
    ids = tokenizer.encode(UNSEEN)
    settings = GenerationSettings(max_text_tokens=len(ids) + 1, max_speech_tokens=60)
    events = list(stream_generate(model, [torch.tensor([1])], [], settings, forced=[ids], llm_states=False,
                                  pronounce=pronounce))
    units = [u for e in events if e.kind == "speech" for u in e.tokens]
    assert len(units) > 10
    generator, offset = model.speech_generator, model.config.unit_offset
    text = generator.text_inputs(torch.tensor(ids), None, phoneme_rows(pronounce(ids, final=True)))
    inputs, targets = generator.sequence(text, torch.tensor(units), model.schedule)
    predicted = generator.model(inputs_embeds=inputs[None]).logits[0, :, offset:offset + UNITS].argmax(-1) + offset
    spoken = (targets >= offset) & (targets < offset + UNITS)
    assert int(spoken.sum()) == len(units)
    assert torch.equal(predicted[spoken], targets[spoken])  # token for token, the same sequence
    shifted = phoneme_rows(pronounce(ids, final=True)).roll(1, dims=0)  # each token said as its predecessor
    assert not torch.equal(generator.text_inputs(torch.tensor(ids), None, shifted), text)
