"""Optional rewrite of assistant turns into spoken style by an LLM (off by default).

Two ways, both configured in `build.text.rewrite`: an OpenAI-compatible chat endpoint (vLLM, TGI,
llama.cpp server, a hosted API), or a local transformers model directory.
"""

from __future__ import annotations

import os

from omniforge.config.build import RewriteConfig
from omniforge.tasks.common.records import SourceBatch


class Rewriter:
    def __init__(self, config: RewriteConfig) -> None:
        self.config = config
        self._pipeline = None

    def __call__(self, text: str) -> str:
        messages = [{"role": "system", "content": self.config.prompt}, {"role": "user", "content": text}]
        return (self._remote(messages) if self.config.endpoint else self._local(messages)).strip() or text

    def _remote(self, messages: list[dict]) -> str:
        import httpx

        headers = {}
        if os.environ.get(self.config.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.config.api_key_env]}"
        response = httpx.post(f"{self.config.endpoint.rstrip('/')}/chat/completions", headers=headers, timeout=120,
                              json={"model": self.config.model, "messages": messages,
                                    "max_tokens": self.config.max_new_tokens, "temperature": 0})
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    def _local(self, messages: list[dict]) -> str:
        if self._pipeline is None:
            from transformers import pipeline

            self._pipeline = pipeline("text-generation", model=self.config.model)
        out = self._pipeline(messages, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        return out[0]["generated_text"][-1]["content"]


def rewrite_assistant_turns(batch: SourceBatch, config: RewriteConfig) -> int:
    """Rewrite in place; returns how many turns changed."""
    rewriter = Rewriter(config)
    changed = 0
    for dialogue in batch.dialogues:
        for turn in dialogue.turns:
            if turn.role == "assistant" and turn.audio is None:
                new = rewriter(turn.text)
                changed += new != turn.text
                turn.text = new
    return changed
