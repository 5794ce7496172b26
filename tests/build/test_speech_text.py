"""Speech-friendly text: what gets spelled out, stripped, split or refused."""

from __future__ import annotations

import pytest

from omniforge.tasks.build.speech_text import Unspeakable, split_sentences, to_spoken


def spoken(text: str, segment: int = 300, turn: int = 1500) -> str:
    return to_spoken(text, segment, turn).text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It has 2,100,000 people.", "It has two million, one hundred thousand people."),
        ("It costs $5.50 today.", "It costs five dollars, fifty cents today."),
        ("Walk 5 km and drink 2 l.", "Walk five kilometers and drink two liters."),
        ("It is -5°C & 20% humid.", "It is minus five degrees Celsius and twenty percent humid."),
        ("The 1st time was in 1999.", "The first time was in nineteen ninety-nine."),
        ("**Paris** is _lovely_ 🎉", "Paris is lovely."),
        ("See [the docs](https://x.org/a) (https://x.org).", "See the docs."),
        ("# Tips\n- Drink water\n- Sleep well", "Tips. Drink water. Sleep well."),
    ],
)
def test_spelled_out_and_stripped(text, expected):
    assert spoken(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Here:\n```python\nprint(1)\n```", "code"),
        ("def f(x):\n    return {x};\nimport os", "code"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "table"),
        ("Solve $x^2 = 4$ for x.", "math"),
        ("🎉🎉 !!!", "empty"),
    ],
)
def test_unspeakable_text_is_refused_with_a_reason(text, reason):
    with pytest.raises(Unspeakable) as err:
        spoken(text)
    assert err.value.reason == reason


def test_long_turns_are_split_and_capped():
    sentence = "This sentence has exactly eight words in it."
    result = to_spoken(" ".join([sentence] * 10), 100, 300)
    assert result.truncated and len(result.text) <= 300 and result.text.endswith(".")
    assert all(len(s) <= 100 for s in result.segments)
    assert " ".join(result.segments) == result.text


def test_a_sentence_longer_than_a_segment_is_cut_at_commas_then_spaces():
    segments = split_sentences("one, two, three, four, five, six, seven, eight, nine, ten", 20)
    assert all(len(s) <= 20 for s in segments) and " ".join(segments).replace(" ,", ",").count(",") == 9
