"""Build the model the first time: each part pretrained where configured, built from sizes where
not, and the speech encoder from whatever Whisper weights are at hand (a transformers checkpoint,
or a CTranslate2 model such as the shipped tiny.en)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from omniforge.config.train import LMConfig, ModelConfig
from omniforge.model.modeling_omni import OmniModel
from omniforge.tasks.common.asr import SHIPPED_MODELS, resolve_model
from omniforge.tasks.train.text_tokenizer import ChatFormat
from omniforge.tasks.train.whisper_ct2 import whisper_encoder_from_ct2


def load_speech_encoder(source: str) -> WhisperEncoder:
    if source in SHIPPED_MODELS or (Path(source) / "model.bin").is_file():
        return whisper_encoder_from_ct2(resolve_model(source))
    return WhisperModel.from_pretrained(source).get_encoder()


def causal_lm(config: LMConfig, vocab_size: int, chat: ChatFormat) -> PreTrainedModel:
    """A pretrained causal LM (its embeddings grown if the tokenizer outgrew them), or a Qwen2 built
    from the configured sizes."""
    if config.pretrained:
        lm = AutoModelForCausalLM.from_pretrained(config.pretrained)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            lm.resize_token_embeddings(vocab_size)
        return lm
    sizes = config.model_dump(exclude={"pretrained"})
    return AutoModelForCausalLM.from_config(Qwen2Config(
        vocab_size=vocab_size, tie_word_embeddings=True, eos_token_id=chat.eos_token_id,
        pad_token_id=chat.tokenizer.pad_token_id, bos_token_id=None, **sizes))


def build_model(config: ModelConfig, chat: ChatFormat, unit_vocab_size: int) -> OmniModel:
    torch.manual_seed(config.seed)
    vocab = len(chat.tokenizer)
    return OmniModel.from_modules(
        load_speech_encoder(config.encoder), causal_lm(config.llm, vocab, chat), causal_lm(config.tts, vocab, chat),
        unit_vocab_size, chat.speech_token_id, chat.eos_token_id, adapter_hidden_size=config.adapter_hidden_size,
        speech_encoder_ds_rate=config.speech_encoder_ds_rate, stream_read=config.stream_read,
        stream_write=config.stream_write)

