"""Settings of an OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, a hosted API) that
a stage asks for text, and the one loopback rule the configs share."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from omniforge.config.base import Section


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (traffic to it never leaves it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ChatEndpointConfig(Section):
    """Where the model answers and how hard to try. The API key goes to the configured endpoint only
    (redirects are not followed), and over plain http only to this machine or when allowed."""

    endpoint: str | None = Field(None, description="OpenAI-compatible base URL (e.g. https://api.example.com/v1, "
                                 "or http://127.0.0.1:8000/v1 for a server on this machine).")
    model: str | None = Field(None, description="Model name at the endpoint, or a local transformers model path.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    allow_http: bool = Field(False, description="Allow a plain-http endpoint on another machine (the API key and "
                             "the text then cross the network unencrypted).")
    retries: int = Field(4, ge=0, description="Tries after the first on a connection error, timeout, 429 or 5xx.")
    retry_backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry; doubles each time (a "
                                   "Retry-After header up to a minute is honoured instead).")
    timeout_s: float = Field(120.0, gt=0, description="Longest wait for one response.")

    @model_validator(mode="after")
    def _plain_http_is_local(self) -> "ChatEndpointConfig":
        if self.endpoint is None:
            return self
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {self.endpoint!r} must be an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname) and not self.allow_http:
            raise ValueError(f"endpoint {self.endpoint} is plain http to another machine: the API key would cross "
                             "the network unencrypted; use https, or set allow_http: true")
        return self
