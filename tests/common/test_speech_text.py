"""Speech-friendly text: what gets spelled out, stripped, split or refused."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniforge.config.build import TextConfig
from omniforge.tasks.common.speech_text import Unspeakable, split_sentences, to_spoken


def spoken(text: str, segment: int = 300, turn: int = 1500, scripts=frozenset({"LATIN"})) -> str:
    return to_spoken(text, TextConfig(max_segment_chars=segment, max_turn_chars=turn), scripts).text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It has 2,100,000 people.", "It has two million one hundred thousand people."),
        ("It costs $5.50 today.", "It costs five dollars fifty cents today."),
        ("It is -5°C & 20% humid.", "It is minus five degrees Celsius and twenty percent humid."),
        ("The 1st time was in 1999.", "The first time was in nineteen ninety nine."),
        ("5 km is about 3.1 mi; 3.5% of $1,200 is $42.", "five kilometers is about three point one miles; three "
         "point five percent of one thousand two hundred dollars is forty two dollars."),
        ("I paid $3 or $4 each.", "I paid three dollars or four dollars each."),
        ("Steps:\n1. Preheat to 180°C.\n2. Bake for 25 min.\n3. Serve at 7:30 pm on Jan. 5.",
         "Steps: Preheat to one hundred and eighty degrees Celsius. Bake for twenty five minutes. Serve at seven "
         "thirty PM on january fifth."),
        ("Tom & Jerry met Dr. Smith on 12/25/2023.", "Tom and Jerry met doctor Smith on december twenty fifth "
         "twenty twenty three."),
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
        ("北京是中国的首都。", "unsupported_language"),
        ("Привет, как дела?", "unsupported_language"),
    ],
)
def test_unspeakable_text_is_refused_with_a_reason(text, reason):
    with pytest.raises(Unspeakable) as err:
        spoken(text)
    assert err.value.reason == reason


def test_long_turns_are_split_and_capped():
    sentence = "This sentence has exactly eight words in it."
    result = to_spoken(" ".join([sentence] * 10), TextConfig(max_segment_chars=100, max_turn_chars=300))
    assert result.truncated and len(result.text) <= 300 and result.text.endswith(".")
    assert all(len(s) <= 100 for s in result.segments)
    assert " ".join(result.segments) == result.text


def test_a_sentence_longer_than_a_segment_is_cut_at_commas_then_spaces():
    segments = split_sentences("one, two, three, four, five, six, seven, eight, nine, ten", 20)
    assert all(len(s) <= 20 for s in segments) and " ".join(segments).replace(" ,", ",").count(",") == 9


def test_text_in_a_script_the_voices_speak_is_kept():
    from omniforge.config.build import VoiceConfig
    from omniforge.tasks.build.voices import Voice, speakable_scripts

    chinese = speakable_scripts([Voice("assistant", VoiceConfig(backend="cosyvoice2", voice="p.wav")),
                                 Voice("user", VoiceConfig(backend="espeak", voice="cmn"))])
    assert chinese == {"CJK"}
    assert spoken("北京是中国的首都。", scripts=chinese) == "北京是中国的首都。"
    english = speakable_scripts([Voice("assistant", VoiceConfig()), Voice("user", VoiceConfig(backend="espeak", voice="en-gb+f3"))])
    assert english == {"LATIN"}


MARKUP = "|\n\t <>[]()!*_~`$^=\\{};:#-.+1 a"


@settings(max_examples=40, deadline=None)
@given(unit=st.text(alphabet=MARKUP, min_size=1, max_size=6))
def test_a_megabyte_of_any_markup_is_read_in_linear_time(unit):
    """No pattern backtracks on a huge turn: any short piece of markup repeated to 1 MB is spoken or
    refused with a reason within seconds (a quadratic pattern takes minutes at this size)."""
    text = (unit * (2**20 // len(unit) + 1))[: 2**20]
    began = time.perf_counter()
    try:
        result = to_spoken(text, TextConfig())
        assert result.truncated and len(result.text) <= TextConfig().max_turn_chars
    except Unspeakable as err:
        assert err.reason
    assert time.perf_counter() - began < 10


def test_a_megabyte_table_line_in_a_source_plans_in_seconds(tmp_path):
    """The review's case end to end through the build's planning: a record whose answer is 1 MB of
    `|` is refused (nothing in it can be said), and the other record is planned."""
    from omniforge.config.build import BuildConfig, SourceConfig
    from omniforge.tasks.build.plan import plan_build
    from omniforge.tasks.build.sources import load_source

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "pipes", "conversations": [
        {"from": "human", "value": "Draw a table."}, {"from": "gpt", "value": "|" * 2**20}]}) + "\n" +
        json.dumps({"id": "fine", "conversations": [
            {"from": "human", "value": "Where is Paris?"}, {"from": "gpt", "value": "Paris is in France."}]}) + "\n")
    began = time.perf_counter()
    source = load_source(SourceConfig(kind="jsonl", path=str(path)))
    plan = plan_build(source.dialogues, source.rejects, source.description, BuildConfig(), with_espeak=False)
    assert time.perf_counter() - began < 10
    assert {u.dialogue_id for u in plan.utterances()} == {"fine"}
    [reject] = plan.rejects
    assert (reject.record, reject.field, reject.reason) == ("pipes", "turns[1].text", "empty")


def test_raw_text_past_the_cap_is_cut_before_it_is_read():
    sentence = "This sentence has exactly eight words in it. "
    result = to_spoken(sentence * 50 + "```python\nprint(1)\n```", TextConfig(max_turn_chars=300, max_raw_chars=1000))
    assert result.truncated and result.text.startswith("This sentence")  # the code past the cap is never seen
    with pytest.raises(ValueError, match="max_raw_chars"):
        TextConfig(max_turn_chars=2000, max_raw_chars=1000)
