"""The units -> audio step of benchmarks/gpu.py: CosyVoice 2's own flow and HiFT (FunAudioLLM's code,
through omniforge's CosyVoice 2 backend) at CosyVoice2-0.5B's published sizes, random weights (time
depends on shapes, not values). First audio waits for one chunk: 25 + 3 units through the backend's
session, that is `token2wav` in streaming mode (the flow's encoder, 10 Euler steps of the flow-matching
estimator with classifier-free guidance, HiFT).

Eagerly, the estimator's ~1500 small kernels a call, 10 calls a chunk, bind the chunk to the host.
`replay_estimator` captures it as a CUDA graph at the first chunk's shapes. CosyVoice's chunk-mask
helper checks on the host for rows with nothing to attend to (`.item()`, which no graph can hold);
while the estimator is captured, its module sees an equivalent that does that fix as a tensor op.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from torch import nn

from benchmarks.gpu_shapes import Clock, Shapes
from omniforge.model.cuda_graph import Replayed
from omniforge.tasks.units.decoders.cosyvoice2 import (SPEAKER_EMBEDDING_SIZE, CosyVoice2UnitDecoder, build_flow_hift,
                                                       import_cosyvoice)

PROBE_TOLERANCE = 1e-3  # fp32: replayed and eager kernels are the same ones


def cosyvoice2_decoder(device: torch.device, seed: int = 1, **sizes: float) -> CosyVoice2UnitDecoder:
    """The backend over a freshly initialised CosyVoice 2 flow and HiFT at its published sizes (or
    the `sizes` given: keys of `flow_hift_yaml`)."""
    import_cosyvoice()
    from cosyvoice.cli.model import CosyVoice2Model

    torch.manual_seed(seed)
    flow, hift = build_flow_hift(**sizes)
    model = CosyVoice2Model(None, flow.to(device).eval(), hift.to(device).eval())
    embedding = torch.randn(1, SPEAKER_EMBEDDING_SIZE, generator=torch.Generator().manual_seed(seed))
    return CosyVoice2UnitDecoder(model, embedding.to(device))


def _chunk_mask_without_sync(xs: torch.Tensor, masks: torch.Tensor, use_dynamic_chunk: bool,
                             use_dynamic_left_chunk: bool, decoding_chunk_size: int, static_chunk_size: int,
                             num_decoding_left_chunks: int, enable_full_context: bool = True) -> torch.Tensor:
    """`cosyvoice.utils.mask.add_optional_chunk_mask` at inference (no dynamic chunks), its fix of
    rows that see nothing (they see everything) done as a tensor op instead of on the host."""
    from cosyvoice.utils.mask import subsequent_chunk_mask

    if use_dynamic_chunk:
        raise ValueError("dynamic chunks are for training")
    chunk_masks = masks
    if static_chunk_size > 0:
        chunk_masks = masks & subsequent_chunk_mask(xs.size(1), static_chunk_size, num_decoding_left_chunks,
                                                    xs.device).unsqueeze(0)
    return chunk_masks | (chunk_masks.sum(dim=-1, keepdim=True) == 0)


class ReplayedEstimator(nn.Module):
    """The flow-matching estimator, replayed as a CUDA graph for the inputs it was captured with
    (shapes and streaming mode); eager for any other."""

    def __init__(self, estimator: nn.Module, frames: int, streaming: bool = True) -> None:
        super().__init__()
        self.estimator, self.streaming = estimator, streaming
        parameter = next(estimator.parameters())
        channels = 80
        examples = [torch.randn(2, channels, frames), torch.ones(2, 1, frames), torch.randn(2, channels, frames),
                    torch.rand(2), torch.randn(2, channels), torch.randn(2, channels, frames)]
        examples = [e.to(device=parameter.device, dtype=parameter.dtype) for e in examples]
        import cosyvoice.flow.decoder as decoder_module

        original = decoder_module.add_optional_chunk_mask
        decoder_module.add_optional_chunk_mask = _chunk_mask_without_sync
        try:
            with torch.no_grad():
                self.replayed = Replayed(lambda *inputs: estimator(*inputs, streaming=streaming), *examples)
        finally:
            decoder_module.add_optional_chunk_mask = original
        self.shapes = [e.shape for e in examples]

    def forward(self, x, mask, mu, t, spks=None, cond=None, streaming=False):
        inputs = [x, mask, mu, t, spks, cond]
        if streaming == self.streaming and all(i is not None and i.shape == s for i, s in zip(inputs, self.shapes)):
            return self.replayed(*inputs).clone()
        return self.estimator(x, mask, mu, t, spks, cond, streaming=streaming)


def replay_estimator(decoder: CosyVoice2UnitDecoder) -> None:
    """From now on the decoder's first chunk runs its estimator as a replayed graph."""
    flow = decoder.model.flow
    frames = (decoder.lookahead_units() - flow.pre_lookahead_len) * flow.token_mel_ratio  # the look-ahead makes none
    cfm = flow.decoder
    cfm.estimator = ReplayedEstimator(cfm.estimator, frames)


class FirstChunk:
    """CosyVoice 2's own decoder (omniforge's backend over FunAudioLLM's code) on an answer's first
    chunk of units, the one first audio waits for: its token hop (25) plus the flow's look-ahead (3)."""

    def __init__(self, shapes: Shapes, device: torch.device, graph: bool) -> None:
        self.decoder = cosyvoice2_decoder(device, **shapes.decoder)
        self.first_chunk = self.decoder.lookahead_units()
        if graph:
            replay_estimator(self.decoder)

    def __call__(self, units: list[int]) -> list:
        session = self.decoder.session()
        try:
            return session.push(units[: self.first_chunk])
        finally:
            session.close()


def decoder_probe(shapes: Shapes, device: torch.device, clock: Clock, repeats: int = 5) -> dict:
    """The first chunk's time with the estimator eager and replayed as a graph (median of `repeats`),
    and how far the replayed audio is from the eager one (same units, same weights)."""
    units = list(range(100, 100 + 28))
    chunk = FirstChunk(shapes, device, graph=False)
    times, audio = {}, {}
    for kind in ("eager", "graph") if device.type == "cuda" else ("eager",):
        if kind == "graph":
            replay_estimator(chunk.decoder)
        chunk(units)  # warm-up
        seconds = []
        for _ in range(repeats):
            torch.manual_seed(0)  # HiFT's excitation is random: the same draws for both
            start = clock()
            audio[kind] = np.concatenate(chunk(units))
            seconds.append(clock() - start)
        times[f"first_chunk_{kind}_ms"] = 1000 * statistics.median(seconds)
    if "graph" in audio:
        times["graph_vs_eager_relative_difference"] = float(np.linalg.norm(audio["graph"] - audio["eager"])
                                                            / np.linalg.norm(audio["eager"]))
    return times
