"""First-audio latency of the streaming engine vs the model compute on the same path: the time spent
inside the models (features, encoder, adapter, LLM, gate fusion, TTS LM, embeddings, units -> mel,
vocoder) before the first audio chunk, timed with forward hooks. The difference is the engine's own
overhead. Second row: how much faster than playback the whole chain makes audio (target 2x, i.e.
a real-time factor of 0.5). Third: that speed with the demo's decoder runtime (`evaluate.decoder`:
ONNX Runtime, growing chunks, a trimmed vocoder context) against torch decoding exact chunks as soon
as they are ready (the baseline).

The model has the demo's sizes (the pretrained tiny.en encoder, the demo LLM and TTS LM, freshly
initialised: latency depends on sizes, not on training) and answers real Piper questions.

    python benchmarks/streaming.py                # ~1 minute on 2 cores
    python benchmarks/streaming.py --questions 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from omniforge.offline_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import report, result_row  # noqa: E402


class ComputeTimer:
    """Wall-clock intervals spent inside the forward calls of the given modules."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._open: dict[int, float] = {}
        self.watch(modules)

    def watch(self, modules: list[torch.nn.Module]) -> None:
        for module in modules:
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._leave)

    def _enter(self, module, args) -> None:
        self._open[id(module)] = time.perf_counter()

    def _leave(self, module, args, output) -> None:
        self.intervals.append((self._open.pop(id(module)), time.perf_counter()))

    def between(self, start: float, stop: float) -> float:
        """Time inside any timed module within [start, stop] (nested calls counted once)."""
        total, reached = 0.0, start
        for a, b in sorted(self.intervals):
            a, b = max(a, reached), min(b, stop)
            if b > a:
                total += b - a
                reached = b
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=10, help="spoken questions to answer")
    args = parser.parse_args()

    from benchmarks.demo_model import demo_chain
    from omniforge.model.streaming import GenerationSettings
    from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
    from omniforge.tasks.units.decoders.learned import EXACT_TORCH, speaking_decoder

    chain = demo_chain(args.questions + 1)
    config, model, chat, unit_to_mel, waves = chain.config, chain.model, chain.chat, chain.unit_to_mel, chain.questions
    torch.set_num_threads(config.evaluate.torch_threads)
    fusion = [m for name, m in model.speech_generator.named_children() if name != "model"]
    # the encoder runs layer by layer (model/speech_encoder.py), so its children are timed
    timer = ComputeTimer([*model.speech_encoder.modules(), model.speech_projector, model.llm,
                          model.llm.get_input_embeddings(), model.speech_generator.model,
                          model.speech_generator.model.get_input_embeddings(), *fusion, unit_to_mel])
    generation = GenerationSettings(max_text_tokens=12, max_speech_tokens=60)
    runtime = config.evaluate.decoder
    vocoder = chain.vocoder(runtime)
    chains = {}
    for label, settings in (("demo", runtime), ("torch, exact chunks", EXACT_TORCH.model_copy(update={"threads": runtime.threads}))):
        decoder = speaking_decoder(unit_to_mel, vocoder, settings)
        engine = StreamingEngine(model, chat, decoder, generation)
        timer.watch([engine.features, decoder.vocoder])
        engine.answer([("user", "")], [waves[0]])  # warm-up
        latencies, computes, audio, busy = [], [], 0.0, 0.0
        for wave in waves[1:]:
            timer.intervals.clear()
            began = time.perf_counter()
            trace = engine.answer([("user", "")], [wave])
            audio, busy = audio + trace.audio_seconds, busy + trace.compute_seconds
            if trace.latency is None:
                continue
            latencies.append(trace.latency)
            computes.append(timer.between(began, began + trace.latency))
        chains[label] = (float(np.median(latencies)), float(np.median(computes)), audio / busy)
        print(f"{label} decoder ({settings.runtime}, context {settings.vocoder_context_frames or 'exact'}, chunks up "
              f"to {settings.max_chunk_seconds} s): {len(latencies)} answers, first-audio latency p50 "
              f"{chains[label][0] * 1000:.0f} ms, model compute before it {chains[label][1] * 1000:.0f} ms; "
              f"{audio:.1f} s of audio in {busy:.1f} s (real-time factor {busy / audio:.2f})")
    latency, compute, speed = chains["demo"]
    report("streaming", [result_row("first-audio latency vs model compute on the path (p50)", latency, compute, "s",
                                    0.95, higher_is_better=False),
                         result_row("speech chain (LLM, TTS LM, units -> audio) speed vs playback", speed, 1.0,
                                    "audio s per s", 2.0),
                         result_row("speech chain speed: the demo's decoder runtime vs torch with exact chunks", speed,
                                    chains["torch, exact chunks"][2], "audio s per s", 1.0)])


if __name__ == "__main__":
    main()
