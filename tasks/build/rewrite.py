"""Optional rewrite of assistant turns into spoken style by an LLM (off by default).

Two ways, both configured in `build.text.rewrite`: an OpenAI-compatible chat endpoint (vLLM, TGI,
llama.cpp server, a hosted API) through `ChatEndpoint`, or a local transformers model directory.
A turn whose rewrite fails after the endpoint's retries leaves its dialogue out as a reject; the
build goes on.
"""

from __future__ import annotations

from omniforge.config.build import RewriteConfig
from omniforge.tasks.common.chat_endpoint import ChatEndpoint, ChatEndpointError
from omniforge.tasks.common.records import Reject, SourceBatch


class Rewriter:
    def __init__(self, config: RewriteConfig) -> None:
        self.config = config
        self.endpoint = ChatEndpoint(config) if config.endpoint else None
        self._pipeline = None

    def __call__(self, text: str) -> str:
        messages = [{"role": "system", "content": self.config.prompt}, {"role": "user", "content": text}]
        if self.endpoint is not None:
            new = self.endpoint.complete(messages, max_tokens=self.config.max_new_tokens, temperature=0)
        else:
            new = self._local(messages)
        return new.strip() or text

    def _local(self, messages: list[dict]) -> str:
        if self._pipeline is None:
            from transformers import pipeline

            self._pipeline = pipeline("text-generation", model=self.config.model)
        out = self._pipeline(messages, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        return out[0]["generated_text"][-1]["content"]


def rewrite_assistant_turns(batch: SourceBatch, config: RewriteConfig) -> int:
    """Rewrite in place; returns how many turns changed. A dialogue with a turn the endpoint could not
    rewrite becomes a reject (`rewrite_failed`)."""
    rewriter = Rewriter(config)
    changed = 0
    kept = []
    for dialogue in batch.dialogues:
        rewrites, failed = {}, None
        for index, turn in enumerate(dialogue.turns):
            if turn.role == "assistant" and turn.audio is None:
                try:
                    rewrites[index] = rewriter(turn.text)
                except ChatEndpointError as err:
                    failed = Reject(dialogue.id, f"turns[{index}].text", "rewrite_failed", str(err))
                    break
        if failed is not None:
            batch.rejects.append(failed)
            continue
        for index, new in rewrites.items():
            changed += new != dialogue.turns[index].text
            dialogue.turns[index].text = new
        kept.append(dialogue)
    batch.dialogues = kept
    return changed
