"""Optional rewrite of assistant turns into spoken style by an LLM (off by default).

Two ways, both configured in `build.text.rewrite`: an OpenAI-compatible chat endpoint (vLLM, TGI,
llama.cpp server, a hosted API) through `ChatEndpoint`, or a local transformers model directory.
A turn whose rewrite fails after the endpoint's retries leaves its dialogue out as a reject; the
build goes on.
"""

from __future__ import annotations

from omniforge.config.build import RewriteConfig
from omniforge.tasks.common.chat_endpoint import ChatEndpointError, ChatModel
from omniforge.tasks.common.records import Reject, SourceBatch


class Rewriter:
    def __init__(self, config: RewriteConfig) -> None:
        self.config = config
        self.model = ChatModel(config)

    def __call__(self, text: str) -> str:
        messages = [{"role": "system", "content": self.config.prompt}, {"role": "user", "content": text}]
        return self.model.complete(messages, self.config.max_new_tokens).strip() or text


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
