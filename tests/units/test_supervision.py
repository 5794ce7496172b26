"""Supervised units: the recognizer's character targets, its best-path reading, and a clear refusal
when the speech has no text to learn from (the fit on real speech runs in the tokenize-units flow test)."""

from __future__ import annotations

import pytest
import torch

from omniforge.config.units import SupervisedProjectionConfig
from omniforge.errors import InputError
from omniforge.tasks.units.supervision import character_targets, greedy_text, train_projection


def test_targets_are_the_normalized_words_characters_without_spaces():
    targets, symbols = character_targets(["Dr. Smith's 2 cats!", "A cat."])
    assert targets == ["drsmith's2cats", "acat"]
    assert symbols == sorted(set("drsmith's2cats" + "acat"))


def test_best_path_merges_repeats_and_drops_blanks():
    symbols = ["a", "b", "l"]
    path = [1, 1, 0, 2, 2, 3, 0, 3, 0]  # a a _ b b l _ l _  ->  "abll"
    log_probs = torch.full((len(path), 4), -10.0)
    log_probs[torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_text(log_probs, symbols) == "abll"


def test_speech_without_text_is_refused_with_the_reason():
    features = [torch.randn(40, 8), torch.randn(30, 8)]
    with pytest.raises(InputError, match="0 of 2"):
        train_projection(features, ["", "!!"], SupervisedProjectionConfig(dim=4, steps=1))
    with pytest.raises(InputError, match="longer in frames than in characters"):
        train_projection([torch.randn(3, 8)] * 2, ["a long sentence", "another long one"],
                         SupervisedProjectionConfig(dim=4, steps=1))
