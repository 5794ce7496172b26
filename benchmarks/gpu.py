"""The production path on a GPU: first-audio latency, cached vs re-prefilled TTS LM, batching,
s2t training throughput and MFU. Weights are random (no model hub is reachable there, and time does
not depend on weight values); the shapes are the real ones: whisper-large-v3 encoder, Qwen2.5-7B-
Instruct LLM, Qwen2.5-0.5B TTS LM, 6561 units, R=3/W=10, bf16, and CosyVoice 2's own flow and HiFT
code at CosyVoice2-0.5B's sizes for units -> audio (benchmarks/gpu_decoder.py).

    python benchmarks/gpu.py --decoder-graph   # on a GPU, real shapes (about 2 minutes on an H200)
    python benchmarks/gpu.py --decoder-probe   # on a GPU: the decoder's first chunk, estimator eager vs replayed
    python benchmarks/gpu.py --tiny            # anywhere, tiny shapes, the same code (the test suite runs it)

Decoding runs as a server on a GPU runs it: slot caches whose steps replay as CUDA graphs
(`model/slot_cache.py`), the LMs named by --compile compiled first, one batch kept across answers.
The first chunk is CosyVoice 2's token hop (25) plus its flow look-ahead (3): 28 units.

It needs torch, transformers (>= 5.24), peft, the project's `model/` code and, for the decoder,
cosyvoice-minicpmo with what its flow and HiFT import (README: the GPU benchmark), so it runs where
Ray and Prefect are not installed. Rows follow the benchmark JSON convention, each naming its device.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_CONFIG = ROOT / "configs" / "llama-omni2-7b.yaml"
sys.path.insert(0, str(ROOT))
try:
    import omniforge.model  # noqa: F401  (installed: the package maps the root folders)
except ImportError:  # a bare checkout (the GPU machine): map them the way pyproject.toml does
    import omniforge

    omniforge.__path__.append(str(ROOT))

from benchmarks.common import RESULTS, report, result_row  # noqa: E402
from benchmarks.gpu_decoder import PROBE_TOLERANCE, FirstChunk, decoder_probe  # noqa: E402
from benchmarks.gpu_shapes import PRODUCTION, TINY, Clock, Shapes, build_model  # noqa: E402
from benchmarks.gpu_training import peak_flops, train_row  # noqa: E402
from omniforge.model.growing_cache import CachedLM  # noqa: E402
from omniforge.model.mel import INPUT_SAMPLE_RATE, WhisperLogMel  # noqa: E402
from omniforge.model.modeling_omni import OmniModel  # noqa: E402
from omniforge.model.padded_speech import PaddedSpeech  # noqa: E402
from omniforge.model.reference_generation import generate_reference  # noqa: E402
from omniforge.model.slot_cache import SlotCacheSettings, SlotLM  # noqa: E402
from omniforge.model.streaming import GenerationSettings, StreamEvent, StreamingBatch  # noqa: E402

PAPER_LATENCY_MS = 583.0  # LLaMA-Omni2-7B on one L40 (paper, Table 1)


# ---------------------------------------------------------------- building
def prompt_ids(model: OmniModel, length: int = 24, seed: int = 0) -> torch.Tensor:
    """A chat prompt's worth of token ids with the speech placeholder two thirds in."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.speech_token_id - 2, (length,), generator=generator)
    ids[2 * length // 3] = model.config.speech_token_id
    return ids.to(next(model.parameters()).device)


def waves(shapes: Shapes, count: int, device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    low, high = shapes.speech_seconds
    lengths = torch.linspace(low, high, count) * INPUT_SAMPLE_RATE
    return [(0.1 * torch.randn(int(n), generator=generator)).to(device) for n in lengths]


# ---------------------------------------------------------------- rows
def decoding(shapes: Shapes, compile: tuple[str, ...] = (), **limits) -> GenerationSettings:
    """Generation as a server on this device runs it: slot caches, replayed as CUDA graphs on a GPU
    (the steps of the LMs named in `compile` compiled first)."""
    return GenerationSettings(**limits, slot_cache=SlotCacheSettings(
        slots=shapes.batch, llm_length=shapes.llm_cache, tts_length=shapes.tts_cache, compile=compile))


def serving_batch(model: OmniModel, shapes: Shapes, compile: tuple[str, ...]) -> StreamingBatch:
    """The batch the latency and batching rows share, as a server keeps one: its graphs (and compiled
    steps) are made once."""
    return StreamingBatch(model, decoding(shapes, compile, max_text_tokens=60, max_speech_tokens=200))


def answer(batch: StreamingBatch, key: str, prompt: torch.Tensor, speech: list[torch.Tensor]) -> Iterator[StreamEvent]:
    """One conversation's events from a running batch (a server's: its graphs are already captured);
    the answer leaves the batch when the caller stops reading."""
    batch.add([key], [prompt], speech)
    try:
        while any(a.key == key for a in batch.answers):
            yield from (event for event in batch.step() if event.item == key)
    finally:
        batch.remove(key)


@dataclass
class LatencyParts:
    speech: float        # features + encoder + adapter
    first_text: float    # LLM prefill + first token
    read_r: float        # the R-th text token (the TTS LM may start)
    first_units: float   # the first W units
    chunk_units: float   # the decoder's first chunk is known
    audio: float         # its audio is out


def first_audio(batch: StreamingBatch, decoder: FirstChunk, speech_inputs: PaddedSpeech, mel: WhisperLogMel,
                wave: torch.Tensor, clock: Clock) -> LatencyParts:
    model = batch.model
    start = clock()
    features, lengths = mel.batch([wave.float()])
    speech = [speech_inputs(features, lengths)]
    marks = {"speech": clock() - start}
    units: list[int] = []
    text = 0
    for event in answer(batch, "question", prompt_ids(model), speech):
        if event.kind == "text":
            text += 1
            if text == 1:
                marks["first_text"] = clock() - start
            if text == model.config.stream_read:
                marks["read_r"] = clock() - start
        elif event.kind == "speech":
            if not units:
                marks["first_units"] = clock() - start
            units += event.tokens
            if len(units) >= decoder.first_chunk:
                break
    marks["chunk_units"] = clock() - start
    decoder(units[: decoder.first_chunk])
    marks["audio"] = clock() - start
    return LatencyParts(**marks)


def latency_row(batch: StreamingBatch, decoder, mel, shapes: Shapes, clock: Clock) -> tuple[dict, dict]:
    model = batch.model
    questions = waves(shapes, shapes.questions, next(model.parameters()).device)
    speech_inputs = PaddedSpeech(model)
    first_audio(batch, decoder, speech_inputs, mel, questions[0], clock)  # warm-up: kernels, allocator, graphs
    parts = [first_audio(batch, decoder, speech_inputs, mel, wave, clock) for wave in questions]
    medians = {name: 1000 * statistics.median(getattr(p, name) for p in parts) for name in LatencyParts.__annotations__}
    medians["feeds"] = feeds(batch)
    row = result_row(f"first-audio latency p50, {len(parts)} questions of {shapes.speech_seconds[0]:g}-"
                     f"{shapes.speech_seconds[1]:g} s (ours vs the paper's 583 ms on an L40)",
                     medians["audio"], PAPER_LATENCY_MS, "ms", 2.0, higher_is_better=False)
    return row, medians


def cached_vs_reprefill_row(model, shapes: Shapes, clock: Clock) -> tuple[dict, dict]:
    """Speech tokens/s for one long answer, our KV-cached streaming vs re-prefilling the TTS LM at
    every chunk (the released code's way), same greedy tokens asserted (so, on a GPU, the replayed
    graphs emit what eager decoding does)."""
    length = shapes.long_answer
    device = next(model.parameters()).device
    speech = [torch.randn(40, model.config.llm_config.hidden_size, device=device, dtype=next(model.parameters()).dtype)]
    prompt = prompt_ids(model)
    text_tokens = math.ceil(length * model.config.stream_read / model.config.stream_write)
    settings = decoding(shapes, max_text_tokens=text_tokens, max_speech_tokens=length)
    batch = StreamingBatch(model, settings)

    def ours() -> list[int]:
        return [u for e in answer(batch, "long", prompt, speech) if e.kind == "speech" for u in e.tokens]

    def theirs() -> list[int]:
        return generate_reference(model, prompt, speech, replace(settings, slot_cache=None), llm_cache=True,
                                  tts_reprefill=True)[1]

    ours()  # warm-up
    start = clock()
    our_units = ours()
    our_s = clock() - start
    start = clock()
    their_units = theirs()
    their_s = clock() - start
    same = next((i for i, (a, b) in enumerate(zip(our_units, their_units)) if a != b), None)
    assert our_units == their_units, (f"cached and re-prefilled generation differ: {len(our_units)} vs "
                                      f"{len(their_units)} tokens, first difference at {same}")
    row = result_row(f"cached streaming vs re-prefilling the TTS LM each chunk, {len(our_units)} speech tokens",
                     len(our_units) / our_s, len(their_units) / their_s, "speech tokens/s", 3.0)
    return row, {"ours_s": our_s, "reprefill_s": their_s, "tokens": len(our_units), "feeds": feeds(batch)}


def feeds(batch: StreamingBatch) -> dict:
    """How many feeds of how many new positions each LM took, replayed or eager (warm-up included)."""
    return {name: {f"{length}{' replayed' if replayed else ' eager'}": count
                   for (length, replayed), count in sorted(lm.calls.items())}
            for name, lm in (("llm", batch.llm), ("tts", batch.voice_lm))}


def batching_rows(batch: StreamingBatch, decoder, shapes: Shapes, clock: Clock) -> tuple[list[dict], dict]:
    """n conversations answered as one batch vs one: aggregate speech tokens/s and first-audio p50
    (a conversation's first chunk of units known, plus one decode of that chunk)."""
    model = batch.model
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    start = clock()
    decoder(list(range(decoder.first_chunk)))
    decode_s = clock() - start

    def run(n: int) -> tuple[float, list[float]]:
        speech = [torch.randn(30 + 5 * i, model.config.llm_config.hidden_size, device=device, dtype=dtype)
                  for i in range(n)]
        prompts = [prompt_ids(model, seed=i) for i in range(n)]
        counts, first = [0] * n, [math.nan] * n
        start = clock()
        batch.add(list(range(n)), prompts, speech)
        while len(batch):
            for event in batch.step():
                if event.kind == "speech":
                    counts[event.item] += len(event.tokens)
                    if math.isnan(first[event.item]) and counts[event.item] >= decoder.first_chunk:
                        first[event.item] = clock() - start + decode_s
        elapsed = clock() - start
        return sum(counts) / elapsed, [f for f in first if not math.isnan(f)]

    run(shapes.batch)  # warm-up: every graph captured
    single_rate, single_first = run(1)
    batch_rate, batch_first = run(shapes.batch)
    single_p50, batch_p50 = 1000 * statistics.median(single_first), 1000 * statistics.median(batch_first)
    rows = [result_row(f"{shapes.batch} conversations batched vs 1: aggregate speech tokens/s", batch_rate, single_rate,
                       "speech tokens/s", 5.0),
            result_row(f"{shapes.batch} conversations batched vs 1: first-audio p50", batch_p50, single_p50, "ms", 0.5,
                       higher_is_better=False)]
    return rows, {"decode_first_chunk_ms": 1000 * decode_s}


def step_times(model: OmniModel, shapes: Shapes, clock: Clock, compile: tuple[str, ...], steps: int = 20) -> dict:
    """Milliseconds of one decode step (one answer, one new position) of each LM: the eager growing
    cache vs the slot cache (replayed as a CUDA graph on a GPU; and compiled first, for the LMs in
    `compile`), after a 40-position prefill; and how far each one's logits are from eager's."""
    times = {}
    for name, lm, length in (("llm", model.llm, shapes.llm_cache), ("tts", model.speech_generator.model,
                                                                     shapes.tts_cache)):
        dtype = lm.get_input_embeddings().weight.dtype
        device = next(lm.parameters()).device
        width = lm.config.hidden_size
        one = torch.ones(1, 1, dtype=torch.long, device=device)
        eager = CachedLM(lm, 1, device)
        eager.feed(torch.randn(1, 40, width, device=device, dtype=dtype), torch.ones(1, 40, dtype=torch.long,
                                                                                     device=device))
        variants = {"eager": eager, "slot": SlotLM(lm, shapes.batch, length, graph_lengths=(1,))}
        if name in compile and device.type == "cuda":
            variants["compiled"] = SlotLM(lm, shapes.batch, length, graph_lengths=(1,), compile=True)
        for kind, cached in variants.items():
            if kind != "eager":
                cached.absorb(eager)  # its prefill, before eager moves on
        inputs = torch.randn(3 + steps, 1, 1, width, device=device, dtype=dtype)
        last = {}
        for kind, cached in variants.items():
            for position in inputs[:3]:  # warm-up (graphs are captured, steps compiled, here)
                cached.feed(position, one)
            start = clock()
            for position in inputs[3:]:
                last[kind] = cached.feed(position, one).logits
            times[f"{name}_{kind}_ms"] = 1000 * (clock() - start) / steps
        # the same positions fed to each: replayed (and compiled) steps compute what eager decoding does
        for kind in variants.keys() - {"eager"}:
            times[f"{name}_{kind}_logits_relative_difference"] = float(
                (last[kind] - last["eager"]).float().norm() / last["eager"].float().norm())
    return times


def timed_section(title: str, action: Callable):
    print(f"--- {title}", flush=True)
    start = time.perf_counter()
    out = action()
    print(f"    {time.perf_counter() - start:.1f} s", flush=True)
    return out


def production_loss_chunk() -> int:
    """The production config's loss chunk, read as YAML (the GPU machine has no omniforge config stack)."""
    import yaml

    return int(yaml.safe_load(PRODUCTION_CONFIG.read_text())["train"]["loss_chunk_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU), same code")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.json")
    parser.add_argument("--skip", nargs="*", default=[], choices=["steps", "latency", "reprefill", "batching", "train"])
    parser.add_argument("--train-batch", type=int, default=None, help="dialogues per training step (default: the "
                        "shapes', 8 at production shapes)")
    parser.add_argument("--decoder-graph", action="store_true", help="replay the decoder's flow-matching estimator "
                        "as a CUDA graph (GPU)")
    parser.add_argument("--decoder-probe", action="store_true", help="only time the decoder's first chunk, its "
                        "estimator eager and replayed (GPU), and exit")
    parser.add_argument("--loss-chunk", type=int, default=production_loss_chunk(), help="training rows: labelled "
                        "positions whose logits are computed at once (0: all; default: train.loss_chunk_tokens of "
                        f"{PRODUCTION_CONFIG.name})")
    parser.add_argument("--compile", nargs="*", default=["tts"], choices=["llm", "tts"],
                        help="LMs whose replayed decode steps are compiled first (GPU; latency and batching rows)")
    args = parser.parse_args()
    shapes = TINY if args.tiny else PRODUCTION
    if args.train_batch is not None:
        shapes = replace(shapes, train_batch=args.train_batch)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    device_name, peak = peak_flops(device, dtype)
    clock = Clock(device)
    print(f"device {device_name}, torch {torch.__version__}, dtype {dtype}", flush=True)
    if args.decoder_probe:  # exits 1 if the replayed estimator's audio is not the eager one's
        probe = decoder_probe(shapes, device, clock)
        print(json.dumps(probe), flush=True)
        sys.exit(int(probe.get("graph_vs_eager_relative_difference", 0.0) > PROBE_TOLERANCE))
    rows, details = [], {}

    def save(new: list[dict]) -> None:
        """Rows are written as each section ends, so a later failure keeps what was measured."""
        rows.extend(row | {"device": device_name, "torch": torch.__version__} for row in new)
        report("gpu" if not args.tiny else "gpu-tiny", rows, args.out)

    if {"latency", "reprefill", "batching"} - set(args.skip):
        model = timed_section("build the model", lambda: build_model(shapes, device, dtype))
        decoder = FirstChunk(shapes, device, graph=args.decoder_graph and device.type == "cuda")
        mel = WhisperLogMel(model.config.encoder_config.num_mel_bins).to(device)
        batch = serving_batch(model, shapes, tuple(args.compile) if device.type == "cuda" else ())
        if "latency" not in args.skip:
            if "steps" not in args.skip:
                details["step_ms"] = timed_section("decode steps", lambda: step_times(
                    model, shapes, clock, tuple(args.compile)))
                print(json.dumps(details["step_ms"]), flush=True)
            row, details["latency_ms"] = timed_section("latency", lambda: latency_row(batch, decoder, mel, shapes,
                                                                                      clock))
            print(json.dumps(details["latency_ms"]), flush=True)
            save([row])
        if "batching" not in args.skip:
            more, details["batching"] = timed_section("batching", lambda: batching_rows(batch, decoder, shapes, clock))
            save(more)
        if "reprefill" not in args.skip:
            # greedy equality needs exact arithmetic: bf16 flips near-ties between two summation orders
            model = model.float()
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = False
            row, details["reprefill"] = timed_section("cached vs re-prefill (fp32)",
                                                      lambda: cached_vs_reprefill_row(model, shapes, clock))
            save([row])
            # where that row's time goes: one step of each LM in fp32, eager (the re-prefill's LLM) vs replayed
            details["step_ms_fp32"] = timed_section("decode steps (fp32)", lambda: step_times(model, shapes, clock, ()))
            print(json.dumps(details["step_ms_fp32"]), flush=True)
        del model, decoder, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "train" not in args.skip:
        model = timed_section("build the model (LoRA row)", lambda: build_model(shapes, device, dtype))
        more, details["train_lora"] = timed_section("s2t LoRA on the LLM", lambda: train_row(
            model, shapes, device, clock, f"LoRA r=16 on the {shapes.llm['hidden_size']}-wide LLM",
            ["speech_projector"], True, peak, args.loss_chunk))
        save(more)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        model = timed_section("build the model (full fine-tune row)", lambda: build_model(shapes, device, torch.float32,
                                                                                           llm=shapes.llm_full))
        more, details["train_full"] = timed_section("s2t full fine-tune", lambda: train_row(
            model, shapes, device, clock, f"full fine-tune of the {shapes.llm_full['hidden_size']}-wide LLM",
            ["speech_projector", "llm"], False, peak, args.loss_chunk))
        save(more)
    print(json.dumps(details, indent=1))


if __name__ == "__main__":
    main()
