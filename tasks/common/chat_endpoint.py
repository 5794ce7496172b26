"""One client for OpenAI-compatible chat endpoints (vLLM, SGLang, llama.cpp server, hosted APIs), or a
local transformers model when no endpoint is set: the build's rewrite and the dialogue generator ask
through it, so retries, backoff and where the API key may go are decided once."""

from __future__ import annotations

import logging
import os
import time

import httpx

from omniforge.config.endpoint import ChatEndpointConfig
from omniforge.errors import InputError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0


class ChatEndpointError(InputError, RuntimeError):
    """The endpoint did not answer usefully (after the retries, or with an error no retry mends)."""


class ChatEndpoint:
    """`complete(messages)` -> the reply's text. The API key (from `api_key_env`) is sent to the
    configured endpoint only: redirects are never followed, so a 3xx is an error, not a hop."""

    def __init__(self, config: ChatEndpointConfig) -> None:
        if not config.endpoint or not config.model:
            raise ChatEndpointError("a chat endpoint needs both endpoint and model")
        self.config = config
        self.url = f"{config.endpoint.rstrip('/')}/chat/completions"
        self.client = httpx.Client(timeout=config.timeout_s, follow_redirects=False)

    def complete(self, messages: list[dict], **params) -> str:
        body = {"model": self.config.model, "messages": messages, **params}
        problem = ""
        for attempt in range(self.config.retries + 1):
            wait = self.config.retry_backoff_s * 2 ** attempt
            try:
                response = self.client.post(self.url, headers=self._headers(), json=body)
            except httpx.TransportError as err:  # refused, reset, timed out
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return self._reply(response)
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                wait = _retry_after(response, wait)
            if attempt < self.config.retries:
                log.warning("chat endpoint %s: %s; retrying in %.1f s", self.config.endpoint, problem, wait)
                time.sleep(wait)
        raise ChatEndpointError(f"{self.config.endpoint}: {problem} (after {self.config.retries + 1} tries)")

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _reply(self, response: httpx.Response) -> str:
        if not response.is_success:
            raise ChatEndpointError(f"{self.config.endpoint}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ChatEndpointError(f"{self.config.endpoint}: not a chat completion ({response.text[:200]!r})") from err
        if not isinstance(content, str):
            raise ChatEndpointError(f"{self.config.endpoint}: the reply has no text ({content!r:.200})")
        return content

    def close(self) -> None:
        self.client.close()


def _retry_after(response: httpx.Response, default: float) -> float:
    """The server's Retry-After (seconds) when it gives one up to a minute, else `default`."""
    try:
        return min(float(response.headers["retry-after"]), MAX_RETRY_AFTER_S)
    except (KeyError, ValueError):
        return default


class ChatModel:
    """A chat model to ask: the configured endpoint, or, without one, a local transformers model
    (`model`: a directory) run in this process."""

    def __init__(self, config: ChatEndpointConfig) -> None:
        if not config.model:
            raise ChatEndpointError("a chat model needs `model` (a model at the endpoint, or a local directory)")
        self.config = config
        self.endpoint = ChatEndpoint(config) if config.endpoint else None
        self._pipeline = None

    def complete(self, messages: list[dict], max_tokens: int, temperature: float = 0.0) -> str:
        if self.endpoint is not None:
            return self.endpoint.complete(messages, max_tokens=max_tokens, temperature=temperature)
        if self._pipeline is None:
            from transformers import pipeline

            self._pipeline = pipeline("text-generation", model=self.config.model)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        out = self._pipeline(messages, max_new_tokens=max_tokens, **sampling)
        return out[0]["generated_text"][-1]["content"]
