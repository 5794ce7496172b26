"""The labelled, chunked cross-entropy is the full-logits loss: same value, same gradients, in one
chunk or many, for both stage losses; a batch without labels is refused."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from omniforge.model.stage_objectives import StageBatch, StageObjective
from omniforge.model.token_loss import IGNORE_INDEX, causal_lm_loss, labelled_cross_entropy
from tests.tiny_model import SPEECH_TOKEN, tiny_model


def small_lm(**extra) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=500, **extra))


def full_logits_loss(lm, embeds, mask, targets) -> torch.Tensor:
    """The reference: every position's logits, then transformers' own shifted-labels loss."""
    labels = torch.cat([targets.new_full((len(targets), 1), IGNORE_INDEX), targets[:, :-1]], dim=1)
    return lm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss


@pytest.mark.parametrize("chunk_tokens", [0, 1, 3, 64])
def test_labelled_chunks_give_the_full_logits_loss_and_gradients(chunk_tokens):
    lm = small_lm()
    generator = torch.Generator().manual_seed(1)
    embeds = torch.randn(3, 12, 32, generator=generator)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[2, 8:] = 0  # a shorter row: padding carries no label
    targets = torch.randint(0, 500, (3, 12), generator=generator)
    targets[:, :4] = IGNORE_INDEX  # the prompt
    targets[2, 7:] = IGNORE_INDEX
    targets[:, -1] = IGNORE_INDEX  # what the last position predicts has no label to shift into

    expected = full_logits_loss(lm, embeds, mask, targets)
    expected.backward()
    reference = {name: p.grad.clone() for name, p in lm.named_parameters() if p.grad is not None}
    assert "lm_head.weight" in reference and len(reference) > 10
    lm.zero_grad()
    loss = causal_lm_loss(lm, embeds, mask, targets, chunk_tokens)
    loss.backward()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert {name for name, p in lm.named_parameters() if p.grad is not None} == set(reference)
    for name, grad in reference.items():
        assert torch.allclose(lm.get_parameter(name).grad, grad, atol=1e-6), name


def test_without_gradients_the_chunked_loss_is_the_same_value():
    lm = small_lm()
    embeds, mask = torch.randn(2, 9, 32), torch.ones(2, 9, dtype=torch.long)
    targets = torch.randint(0, 500, (2, 9))
    targets[:, -1] = IGNORE_INDEX
    with torch.no_grad():
        value = causal_lm_loss(lm, embeds, mask, targets, 4)
    assert not value.requires_grad
    assert torch.allclose(value, full_logits_loss(lm, embeds, mask, targets), atol=1e-6)


def test_a_biased_head_gets_its_gradients_in_chunks():
    generator = torch.Generator().manual_seed(2)
    head = torch.nn.Linear(6, 11)
    hidden = torch.randn(2, 7, 6, generator=generator, requires_grad=True)
    targets = torch.randint(0, 11, (2, 7), generator=generator)
    targets[0, :3] = IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), targets.flatten())
    reference = torch.autograd.grad(expected, [hidden, head.weight, head.bias])
    loss = labelled_cross_entropy(hidden, targets, head, chunk_tokens=4)
    assert torch.allclose(loss, expected, atol=1e-6)
    for ours, theirs in zip(torch.autograd.grad(loss, [hidden, head.weight, head.bias]), reference):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_a_batch_without_labels_and_heads_that_are_not_a_matmul_are_refused():
    targets = torch.full((1, 5), IGNORE_INDEX)
    with pytest.raises(ValueError, match="no position of the batch has a label"):
        labelled_cross_entropy(torch.randn(1, 5, 4), targets, torch.nn.Linear(4, 3), 0)
    targets[0, 2] = 1
    with pytest.raises(ValueError, match="plain nn.Linear output head, not Sequential"):
        labelled_cross_entropy(torch.randn(1, 5, 4), targets, torch.nn.Sequential(torch.nn.Linear(4, 3)), 2)
    lm = small_lm()
    lm.config.logit_scale = 0.5
    with pytest.raises(ValueError, match="scales its logits"):
        causal_lm_loss(lm, torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.long), targets, 0)


@pytest.mark.parametrize("stage", ["s2t", "tts"])
def test_each_stage_loss_is_the_same_chunked_or_not(stage):
    model = tiny_model()
    ids = torch.tensor([1, SPEECH_TOKEN, 7, 8, 9, 10, 11])
    labels = torch.tensor([IGNORE_INDEX] * 3 + [8, 9, 10, 11])
    batch = StageBatch([ids], [labels], [], torch.randn(1, 16, 40), torch.tensor([40]),
                       [torch.tensor([5, 6, 7]), torch.tensor([8, 9])], [torch.arange(1, 12), torch.arange(3, 9)])
    whole, chunked = StageObjective(model, stage, 0)(batch), StageObjective(model, stage, 2)(batch)
    assert torch.isfinite(whole) and torch.allclose(whole, chunked, atol=1e-6)
