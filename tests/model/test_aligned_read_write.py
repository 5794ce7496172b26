"""Aligned read-write: the TTS LM says <read> when a text token is spoken and is given the next. The
schedule, its training targets, each token's share of the speech from a word alignment, and
streaming generation (answers joining and leaving, capped steps) token for token what the plain
reference generation gives."""

from __future__ import annotations

import pytest
import torch

from omniforge.model.modeling_omni import IGNORE_INDEX
from omniforge.model.read_write import ReadWrite, interleave, token_unit_counts
from omniforge.model.reference_generation import generate_reference
from omniforge.model.streaming import GenerationSettings, StreamingBatch
from tests.model.test_model import letters
from tests.tiny_model import EOS, TEXT_VOCAB, UNITS, three_prompts, tiny_config, tiny_model


def test_aligned_vocabulary_adds_read_after_sep():
    config = tiny_config(stream_aligned=True)
    assert config.tts_vocab_size == TEXT_VOCAB + UNITS + 2
    assert config.read_token_id == config.sep_token_id + 1
    assert tiny_config().read_token_id is None


@pytest.mark.parametrize(
    ("lookahead", "counts", "expected"),
    [
        (0, [2, 0, 1], "t0 s0 s1 read t1 read t2 s2 read sep eos"),
        (1, [2, 0, 1], "t0 t1 s0 s1 read t2 read sep s2 eos"),
        (1, [3], "t0 sep s0 s1 s2 eos"),
        (2, [1, 1], "t0 t1 sep s0 s1 eos"),
    ],
)
def test_aligned_interleaving_speaks_each_token_then_reads(lookahead, counts, expected):
    schedule = ReadWrite(aligned=True, lookahead=lookahead)
    assert letters(interleave(len(counts), sum(counts), schedule, counts)) == expected


def test_aligned_interleaving_needs_counts_that_add_up():
    with pytest.raises(ValueError, match="speech count per text token"):
        interleave(3, 4, ReadWrite(aligned=True), [1, 1, 1])
    with pytest.raises(ValueError, match="speech count per text token"):
        interleave(3, 3, ReadWrite(aligned=True))


def test_aligned_targets_say_read_before_each_text_the_model_asked_for():
    model = tiny_model(stream_aligned=True, stream_lookahead=1)
    generator, config = model.speech_generator, model.config
    text = generator.embed(torch.tensor([7, 8, 9]))
    inputs, targets = generator.sequence(text, torch.tensor([5, 6, 7]), model.schedule, counts=[2, 0, 1])
    off, read = config.unit_offset, config.read_token_id
    # inputs: t0 t1 s0 s1 t2 sep s2 (the <read> slots are targets only)
    assert targets.tolist() == [IGNORE_INDEX, off + 5, off + 6, read, read, off + 7, EOS]
    assert len(inputs) == 7 and torch.equal(inputs[4], text[2])
    assert torch.equal(inputs[5], generator.embed(torch.tensor(config.sep_token_id)))


def test_each_token_has_the_speech_from_its_first_letter_to_the_next_token():
    # "Hello big world." at 10 units/s: Hello 0.1-0.5 s, big 0.6-0.8 s, world. 1.0-1.6 s; tokens Hel|lo| big| world|.
    counts = token_unit_counts([0, 3, 6, 10, 15], [0, 6, 10], [0.1, 0.6, 1.0], [0.5, 0.8, 1.6], 16, 20, 10)
    assert counts == [3, 3, 4, 5, 5]  # "lo" keeps the pause before "big"; "." the silence after the sentence
    assert sum(token_unit_counts([0, 5, 9], [0], [0.0], [9.0], 9, 7, 1.0)) == 7  # the speech is all shared out
    assert token_unit_counts([0, 2, 4], [0, 3], [0.0, 0.1], [0.1, 0.2], 6, 3, 10) == [1, 0, 2]  # never negative


def trained_to_read(model, steps: int = 80):
    """A random TTS LM says <read> at random or never: a few steps on aligned sequences of two units per
    text token teach the test model to read every few units and to end soon after its text."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.speech_generator.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        text = [torch.randint(10, TEXT_VOCAB, (6,)) for _ in range(4)]
        units = [torch.randint(0, UNITS, (12,)) for _ in range(4)]
        loss = model.tts_loss(text, units, unit_counts=[torch.full((6,), 2)] * 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("speech_per_step", [None, 2])
def test_aligned_answers_joining_and_leaving_a_batch_are_answered_as_alone(speech_per_step):
    model = trained_to_read(tiny_model(seed=3, stream_aligned=True, stream_lookahead=1)).double()
    prompts, speech = three_prompts(model)
    settings = GenerationSettings(max_text_tokens=10, max_speech_tokens=40, speech_per_step=speech_per_step)
    batch = StreamingBatch(model, settings)
    batch.add(["a"], prompts[:1], speech[:1])
    events = batch.step() + batch.step()
    batch.add(["b", "c"], prompts[1:], speech[1:])
    events += batch.step()
    batch.remove("c")
    while len(batch):
        events += batch.step()
    for key, item in (("a", 0), ("b", 1)):
        text = [e.tokens[0] for e in events if e.kind == "text" and e.item == key]
        units = [u for e in events if e.kind == "speech" and e.item == key for u in e.tokens]
        reference = generate_reference(model, prompts[item], [speech[item]], settings)
        assert (text, units) == reference
        assert 0 < len(units) < settings.max_speech_tokens  # it read all its text (<read>s), then ended
    assert sorted(e.item for e in events if e.kind == "end") == ["a", "b"]
