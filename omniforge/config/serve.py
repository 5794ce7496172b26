"""Settings of `omniforge serve`: a checkpoint answering spoken conversations over WebSockets."""

from __future__ import annotations

from pydantic import Field

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
    admit_window_ms: float = Field(20.0, ge=0, description="When a turn arrives at an idle server, wait this "
                                   "long for others to prefill with it (one batch from the first step).")
    torch_threads: int = Field(1, ge=1, description="Torch threads of the LMs' steps (one token per answer: too "
                               "little work to share between cores).")
    prompt_threads: int = Field(2, ge=1, description="Torch threads that encode new turns' speech and prefill their "
                                "prompts (whole utterances: they gain from every core).")
    decoder: DecoderRuntimeConfig = Field(default_factory=DecoderRuntimeConfig,
                                          description="How the units -> audio decoder runs.")
