"""Speech tokens per second: our cached streaming generation vs re-prefilling the TTS LM at every
chunk (the released LLaMA-Omni 2 code's way; its LLM keeps a KV cache, as ours does).

Both produce the same greedy tokens. Answer length is set by the text length: with R=3, W=10,
a text of ceil(N*3/10) tokens interleaves N speech tokens. Weights are random (speed only).

    python benchmarks/generation.py     # tiny at 50/200/800 tokens, 0.5B-sized at 50 (~4 min)
    python benchmarks/generation.py --sizes 0.5b --lengths 50 200 800   # ~30 min on 2 cores

On this CPU a 0.5B-sized model is memory-bound (every token reads ~2 GB of fp32 weights): about
2 tokens/s, hence the short default there. Threads per size are the faster setting measured here
(tiny kernels run 4x slower on 2 threads than on 1); both methods always share the setting.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import report, result_row  # noqa: E402
from omniforge.model.configuration_omni import OmniConfig  # noqa: E402
from omniforge.model.modeling_omni import OmniModel  # noqa: E402
from omniforge.model.reference_generation import generate_reference  # noqa: E402
from omniforge.model.streaming import GenerationSettings, stream_generate  # noqa: E402

WHISPER_TINY = dict(model_type="whisper", num_mel_bins=80, d_model=384, encoder_layers=4, encoder_attention_heads=6,
                    encoder_ffn_dim=1536, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=6,
                    decoder_ffn_dim=1536, vocab_size=51864)
QWEN_05B = dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True)
TINY_LM = dict(model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192)


DEFAULT_LENGTHS = {"tiny": [50, 200, 800], "0.5b": [50]}
DEFAULT_THREADS = {"tiny": 1, "0.5b": 2}


def build(size: str) -> OmniModel:
    llm = QWEN_05B if size == "0.5b" else TINY_LM
    units = 6561
    tts = {**llm, "vocab_size": llm["vocab_size"] + units + 1}
    config = OmniConfig(encoder_config=WHISPER_TINY, llm_config=llm, tts_config=tts, unit_vocab_size=units,
                        speech_token_id=5, eos_token_id=2, stream_read=3, stream_write=10)
    torch.manual_seed(0)
    return OmniModel(config).eval()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(model: OmniModel, length: int) -> tuple[float, float]:
    speech = model.speech_embeddings(torch.randn(1, 80, 300), torch.tensor([300]))
    prompt = torch.tensor([1, 5, 7, 8])
    settings = GenerationSettings(max_text_tokens=math.ceil(length * model.config.stream_read / model.config.stream_write),
                                  max_speech_tokens=length)
    ours_s, events = timed(lambda: list(stream_generate(model, [prompt], speech, settings)))
    ours_units = [u for e in events if e.kind == "speech" for u in e.tokens]
    base_s, (_, base_units) = timed(lambda: generate_reference(model, prompt, speech, settings, llm_cache=True,
                                                               tts_reprefill=True))
    assert ours_units == base_units, "the two ways must generate the same tokens"
    return len(ours_units) / ours_s, len(base_units) / base_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "0.5b"], choices=["tiny", "0.5b"])
    parser.add_argument("--lengths", nargs="+", type=int, default=None,
                        help="speech tokens per answer (default: 50 200 800 for tiny, 50 for 0.5b)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 tiny, 2 0.5b)")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        torch.set_num_threads(args.threads or DEFAULT_THREADS[size])
        model = build(size)
        measure(model, 20)  # warm-up
        for length in args.lengths or DEFAULT_LENGTHS[size]:
            ours, baseline = measure(model, length)
            print(f"{size} {length}: ours {ours:.1f} tok/s, re-prefill {baseline:.1f} tok/s")
            rows.append(result_row(f"{size}, {length} speech tokens", ours, baseline, "speech tokens/s", 1.0))
    report("generation", rows)


if __name__ == "__main__":
    main()
