"""Settings of dialogue generation: single-turn instructions -> multi-turn dialogues written by an LLM
(the paper's data recipe: InstructS2S instructions extended to about 1-5 turns)."""

from __future__ import annotations

from pydantic import Field

from omniforge.config.base import Section
from omniforge.config.build import SourceConfig
from omniforge.config.endpoint import ChatEndpointConfig

DIALOGUE_PROMPT = (
    "You write a spoken conversation between a user and a voice assistant. It starts with the user's first "
    "message below, word for word. Write exactly {turns} user messages, each followed by the assistant's "
    "answer; the later user messages are natural follow-up questions. Everything is said aloud: the "
    "assistant answers in plain, short sentences (at most three), with no lists, no markdown, no code, no "
    "formulas, no emoji, numbers written as words. Reply with JSON only: "
    '{{"dialogue": [{{"role": "user", "content": "..."}}, {{"role": "assistant", "content": "..."}}, ...]}}'
    "\n\nThe user's first message: {instruction}"
)


class GenerateConfig(Section):
    """The `generate_dialogues` flow."""

    name: str = Field("generated", description="Name of the generated dialogues (dialogues/NAME); the build "
                      "reads them with build.source.kind=generated, build.source.path=dialogues/NAME.")
    source: SourceConfig = Field(default_factory=SourceConfig, description="The instructions: each record's first "
                                 "user turn (JSONL or HF in the layouts the build reads; answers are ignored).")
    chat: ChatEndpointConfig = Field(default_factory=ChatEndpointConfig, description="The LLM that writes the "
                                     "dialogues: an OpenAI-compatible endpoint, or `model` alone for a local "
                                     "transformers model.")
    user_turns: list[float] = Field(default_factory=lambda: [1.0] * 5, min_length=1, description="Relative weights "
                                    "of 1, 2, 3, ... user turns per dialogue, drawn per instruction with `seed` "
                                    "(default: 1-5 alike, the paper's shape).")
    seed: int = Field(0, description="Seed of the turn-count draw (and of the endpoint's sampling, where it takes one).")
    prompt: str = Field(DIALOGUE_PROMPT, description="What the LLM is asked ({turns} and {instruction} are filled "
                        "in); its reply must be the JSON it describes.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(1500, ge=16, description="Longest reply.")
    max_turn_chars: int = Field(600, ge=20, description="A dialogue with a longer turn is rejected (too_long).")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    checkpoint_every: int = Field(8, ge=1, description="Finished dialogues per cache shard written (what a killed "
                                  "run can lose at most).")
    cache_url: str | None = Field(None, description="Where generated dialogues are cached (default: "
                                  "STORE/cache/generate). Makes re-runs and resumes incremental.")
