"""Settings of `omniforge serve`: a checkpoint answering spoken conversations over WebSockets."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from omniforge.config.endpoint import is_loopback
from omniforge.config.evaluate import GenerationLimits
from omniforge.config.units import DecoderRuntimeConfig


class ServeConfig(GenerationLimits):
    """The server: where it listens, what it answers with, and its limits."""

    checkpoint: str = Field("checkpoint/demo", description="Checkpoint to serve: checkpoint/NAME[@version].")
    host: str = Field("127.0.0.1", description="Interface to bind (loopback by default: reachable from this "
                      "machine only; 0.0.0.0 opens it to the network).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free one).")
    max_conversations: int = Field(8, ge=1, description="Conversations at once (answered as one batch); one "
                                   "more is told the server is busy.")
    max_turn_seconds: float = Field(30.0, gt=0, description="Longest user turn (audio is refused past it).")
    max_frame_bytes: int = Field(1_000_000, ge=1024, description="Largest WebSocket message.")
    max_typed_chars: int = Field(2000, ge=1, description="Longest typed user message (`input_text`): its tokens join "
                                 "the prompt that every later answer of the conversation prefills.")
    admit_window_ms: float = Field(20.0, ge=0, description="When a turn arrives at an idle server, wait this "
                                   "long for others to prefill with it (one batch from the first step).")
    torch_threads: int = Field(1, ge=1, description="Torch threads of the LMs' steps (one token per answer: too "
                               "little work to share between cores).")
    prompt_threads: int = Field(2, ge=1, description="Torch threads that encode new turns' speech and prefill their "
                                "prompts (whole utterances: they gain from every core).")
    decoder: DecoderRuntimeConfig = Field(default_factory=DecoderRuntimeConfig,
                                          description="How the units -> audio decoder runs.")
    token: SecretStr | None = Field(None, description="A bearer token every client must present (`Authorization: "
                                    "Bearer TOKEN`, or from a browser the `openai-insecure-api-key.TOKEN` WebSocket "
                                    "subprotocol, as OpenAI's browser clients send it; the page takes it as ?token=). "
                                    "Required when `host` is not a loopback address. Never printed or stored.")
    token_from_env: str | None = Field(None, description="Read `token` from this environment variable instead.")
    allowed_origins: list[str] = Field(default_factory=list, description="Web origins (scheme://host[:port]) whose "
                                       "pages may connect, besides the server's own; \"*\" any. A browser always "
                                       "sends its page's Origin: without this, any site the user opens could talk "
                                       "to a server on their machine. Clients that send none (SDKs) are let in.")
    idle_timeout_s: float = Field(120.0, gt=0, description="Close a connection that sends nothing for this long "
                                  "(an idle socket holds one of `max_conversations`).")
    max_session_s: float = Field(3600.0, gt=0, description="Close a connection after this long, whatever it does.")
    max_turns: int = Field(40, ge=1, description="User turns one conversation may keep (each is encoded and read "
                           "again by every later answer); one more gets `conversation_full`.")
    max_messages_per_s: float = Field(200.0, gt=0, description="Messages a connection may send per second, on "
                                      "average over a second's burst (audio in 20 ms chunks is 50 a second).")

    @model_validator(mode="after")
    def _a_slot_per_conversation(self) -> "ServeConfig":
        if self.slot_cache is not None and self.slot_cache.slots < self.max_conversations:
            raise ValueError(f"serve.slot_cache.slots={self.slot_cache.slots} holds fewer answers than "
                             f"serve.max_conversations={self.max_conversations}: raise it (or lower max_conversations)")
        return self

    @model_validator(mode="after")
    def _token_off_loopback(self) -> "ServeConfig":
        if self.token is None and self.token_from_env is None and not is_loopback(self.host):
            raise ValueError(f"serve.host={self.host} opens the server to the network: set serve.token (or "
                             "serve.token_from_env) so only your clients can use it")
        return self

