"""One dialogue from one instruction: how many user turns it gets (a seeded draw), what the LLM is
asked, and what of its reply is a dialogue, or a reject with its reason (empty, malformed, refused,
too_long, unspeakable)."""

from __future__ import annotations

import json
import random
import re

from omniforge.config.generate import GenerateConfig
from omniforge.hashing import stable_hash
from omniforge.tasks.common.records import Dialogue
from omniforge.tasks.common.speech_text import Unspeakable, check_speakable

REFUSAL = re.compile(r"\b(?:I'?m sorry|I am sorry|I cannot|I can'?t (?:help|assist|do)|I'?m unable|I am unable|"
                     r"as an AI)\b", re.IGNORECASE)
CODE_FENCE = re.compile(r"^```(?:json)?[ \t]*\n?|\n?```[ \t]*$")


class GenerationRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def instruction_of(dialogue: Dialogue) -> str:
    """A source record's instruction: its first user turn's text."""
    return next(t.text for t in dialogue.turns if t.role == "user")


def user_turns(dialogue_id: str, config: GenerateConfig) -> int:
    """How many user turns this instruction's dialogue gets: drawn from `user_turns`' weights, the same
    for the same id and seed whatever else the source holds."""
    rng = random.Random(f"{config.seed}/{dialogue_id}")
    return rng.choices(range(1, len(config.user_turns) + 1), weights=config.user_turns)[0]


def generation_key(instruction: str, turns: int, config: GenerateConfig) -> str:
    """Everything that decides the dialogue: the instruction, its turn count and how the model is asked."""
    return stable_hash({"instruction": instruction, "turns": turns, "model": config.chat.model,
                        "prompt": config.prompt, "temperature": config.temperature, "max_tokens": config.max_tokens,
                        "seed": config.seed, "max_turn_chars": config.max_turn_chars}, length=32)


def request(instruction: str, turns: int, config: GenerateConfig) -> list[dict]:
    return [{"role": "user", "content": config.prompt.format(turns=turns, instruction=instruction)}]


def parse_reply(reply: str, instruction: str, turns: int, max_turn_chars: int) -> list[dict]:
    """The reply's dialogue as OpenAI messages, its first user turn the instruction itself."""
    text = CODE_FENCE.sub("", reply.strip())
    if not text:
        raise GenerationRejected("empty", "the reply is empty")
    try:
        data = json.loads(text)
    except ValueError as err:
        if REFUSAL.search(text):
            raise GenerationRejected("refused", text[:200]) from None
        raise GenerationRejected("malformed", f"not JSON ({err}): {text[:120]!r}") from None
    messages = data.get("dialogue") if isinstance(data, dict) else data
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in messages):
        raise GenerationRejected("malformed", "expected {\"dialogue\": [{\"role\", \"content\"}, ...]}")
    roles = [m.get("role") for m in messages]
    if roles != ["user", "assistant"] * turns:
        raise GenerationRejected("malformed", f"expected {turns} user turns each answered, got roles {roles[:12]}")
    dialogue = [{"role": m["role"], "content": m["content"].strip()} for m in messages]
    dialogue[0]["content"] = instruction
    for index, message in enumerate(dialogue):
        content = message["content"]
        if not content:
            raise GenerationRejected("empty", f"turn {index} is empty")
        if message["role"] == "assistant" and REFUSAL.search(content):
            raise GenerationRejected("refused", f"turn {index}: {content[:200]}")
        if len(content) > max_turn_chars:
            raise GenerationRejected("too_long", f"turn {index} has {len(content)} characters > {max_turn_chars}")
        try:
            check_speakable(content)
        except Unspeakable as err:
            raise GenerationRejected("unspeakable", f"turn {index}: {err}") from None
    return dialogue
