"""A tiny OmniModel for tests: every part real, every size small (builds in ~0.1 s)."""

from __future__ import annotations

import torch

from omniforge.model.configuration_omni import OmniConfig
from omniforge.model.modeling_omni import OmniModel

TEXT_VOCAB, UNITS, SPEECH_TOKEN, EOS = 64, 20, 5, 2


def tiny_config(text_vocab: int = TEXT_VOCAB, **overrides) -> OmniConfig:
    settings = dict(
        encoder_config=dict(model_type="whisper", num_mel_bins=16, d_model=32, encoder_layers=2,
                            encoder_attention_heads=2, encoder_ffn_dim=64, max_source_positions=100,
                            decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=10,
                            bos_token_id=1, eos_token_id=2, pad_token_id=0, decoder_start_token_id=1),
        llm_config=dict(model_type="qwen2", vocab_size=text_vocab, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        tie_word_embeddings=False),
        tts_config=dict(model_type="qwen2", vocab_size=text_vocab + UNITS + 1 + bool(overrides.get("stream_aligned")),
                        hidden_size=24, intermediate_size=48,
                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                        tie_word_embeddings=True),
        adapter_hidden_size=48, unit_vocab_size=UNITS, stream_read=3, stream_write=4,
        speech_token_id=SPEECH_TOKEN, eos_token_id=EOS,
    )
    settings.update(overrides)
    return OmniConfig(**settings)


def tiny_model(seed: int = 0, text_vocab: int = TEXT_VOCAB, **overrides) -> OmniModel:
    torch.manual_seed(seed)
    return OmniModel(tiny_config(text_vocab, **overrides)).eval()


def three_prompts(model: OmniModel) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Three prompts of different lengths, each with one speech placeholder, and their speech (the
    model's adapter outputs of random features, double precision): answers that join a running batch."""
    features, lengths = torch.randn(3, 16, 60, dtype=torch.float64), torch.tensor([60, 35, 48])
    prompts = [torch.tensor([1, SPEECH_TOKEN, 7, 8]), torch.tensor([1, 9, SPEECH_TOKEN, 3, 11]),
               torch.tensor([2, SPEECH_TOKEN])]
    return prompts, model.speech_embeddings(features, lengths)
