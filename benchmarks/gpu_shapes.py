"""The shapes benchmarks/gpu.py measures at (the production path's real ones, and tiny ones for CPU),
the model built at them (random weights, made on the device), and its clock."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from omniforge.model.configuration_omni import OmniConfig
from omniforge.model.modeling_omni import OmniModel

UNITS = 6561


@dataclass(frozen=True)
class Shapes:
    encoder: dict
    llm: dict
    tts: dict
    llm_full: dict          # the LLM of the full fine-tune row
    decoder: dict
    questions: int
    speech_seconds: tuple[float, float]
    long_answer: int        # speech tokens of the cached-vs-re-prefill row
    batch: int
    train_batch: int
    train_speech_seconds: float
    train_text_tokens: int  # per dialogue, LoRA row (the 7B model's activations bound it)
    full_train_text_tokens: int  # per dialogue, full fine-tune row
    train_steps: int
    llm_cache: int          # positions of a slot cache's row: the LLM's (prompt, speech, text)
    tts_cache: int          # and the TTS LM's (text read, speech written)


WHISPER_LARGE_V3 = dict(model_type="whisper", num_mel_bins=128, d_model=1280, encoder_layers=32,
                        encoder_attention_heads=20, encoder_ffn_dim=5120, max_source_positions=1500,
                        decoder_layers=1, decoder_attention_heads=20, decoder_ffn_dim=5120, vocab_size=51866)
QWEN = dict(model_type="qwen2", max_position_embeddings=32768, rope_theta=1e6)
QWEN25_7B = dict(QWEN, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False)
QWEN25_15B = dict(QWEN, vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True)
QWEN25_05B = dict(QWEN, vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
COSYVOICE2_DECODER = {}  # CosyVoice2-0.5B's published sizes (benchmarks/gpu_decoder.py)

PRODUCTION = Shapes(WHISPER_LARGE_V3, QWEN25_7B, QWEN25_05B, QWEN25_15B, COSYVOICE2_DECODER, questions=20,
                    speech_seconds=(3.0, 6.0), long_answer=800, batch=8, train_batch=8, train_speech_seconds=10.0,
                    train_text_tokens=400, full_train_text_tokens=1000, train_steps=6, llm_cache=1024,
                    tts_cache=2048)
TINY_LM = dict(QWEN, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
TINY = Shapes(dict(WHISPER_LARGE_V3, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                   decoder_attention_heads=4, decoder_ffn_dim=128),
              TINY_LM, dict(TINY_LM, hidden_size=48, num_attention_heads=4), dict(TINY_LM, hidden_size=96),
              dict(flow_heads=2, flow_linear_units=128, flow_blocks=1, estimator_channels=32, estimator_blocks=1,
                   estimator_mid_blocks=1, estimator_heads=2, hift_channels=32),
              questions=3, speech_seconds=(1.0, 2.0), long_answer=60, batch=3, train_batch=2,
              train_speech_seconds=2.0, train_text_tokens=24, full_train_text_tokens=32, train_steps=2,
              llm_cache=256, tts_cache=512)


class Clock:
    """Wall time with the device drained first, so GPU work is counted where it happens."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()


def build_model(shapes: Shapes, device: torch.device, dtype: torch.dtype, llm: dict | None = None) -> OmniModel:
    llm = llm or shapes.llm
    config = OmniConfig(encoder_config=shapes.encoder, llm_config=llm,
                        tts_config=dict(shapes.tts, vocab_size=llm["vocab_size"] + UNITS + 1), unit_vocab_size=UNITS,
                        speech_token_id=llm["vocab_size"] - 1, eos_token_id=llm["vocab_size"] - 2,
                        stream_read=3, stream_write=10)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # made where it runs: a 7B model initialised on the CPU takes minutes
            return OmniModel(config).eval()
    finally:
        torch.set_default_dtype(previous)
