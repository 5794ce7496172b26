"""Build the model the first time: each part pretrained where configured, built from sizes where
not, and the speech encoder from whatever Whisper weights are at hand (a transformers checkpoint,
or a CTranslate2 model such as the shipped tiny.en)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from omniforge.config.train import LMConfig, ModelConfig
from omniforge.model.cosyvoice2_lm import released_to_ours
from omniforge.model.modeling_omni import OmniModel
from omniforge.tasks.common.pronunciation import PHONEME_VOCAB_SIZE
from omniforge.tasks.common.whisper_encoder import load_speech_encoder
from omniforge.tasks.train.text_tokenizer import ChatFormat
from omniforge.tasks.units.tokenizers import S3UnitTokenizer


def causal_lm(config: LMConfig, vocab_size: int, chat: ChatFormat) -> PreTrainedModel:
    """A pretrained causal LM (its embeddings grown if the tokenizer outgrew them), or a Qwen2 built
    from the configured sizes; for CosyVoice 2's speech LM, the shape of its Qwen2 with untied
    embeddings (the weights come from llm.pt, `load_cosyvoice2_llm`)."""
    if config.cosyvoice2_llm:
        if not config.pretrained:
            raise ValueError("train.model.tts.pretrained: set it to the Qwen2 folder CosyVoice 2's LLM was built on "
                             "(CosyVoice2-0.5B/CosyVoice-BlankEN) to use train.model.tts.cosyvoice2_llm")
        shape = AutoConfig.from_pretrained(config.pretrained)
        shape.tie_word_embeddings = False
        return AutoModelForCausalLM.from_config(shape)
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
    model = OmniModel.from_modules(
        load_speech_encoder(config.encoder), causal_lm(config.llm, vocab, chat), causal_lm(config.tts, vocab, chat),
        unit_vocab_size, chat.speech_token_id, chat.eos_token_id, adapter_hidden_size=config.adapter_hidden_size,
        speech_encoder_ds_rate=config.speech_encoder_ds_rate, stream_read=config.stream_read,
        stream_write=config.stream_write, stream_aligned=config.stream_aligned,
        stream_lookahead=config.stream_lookahead, gate_init_bias=config.gate_init_bias,
        phoneme_vocab_size=PHONEME_VOCAB_SIZE if config.pronunciation.voice else 0,
        phonemes_per_token=config.pronunciation.per_token, pronunciation_voice=config.pronunciation.voice)
    if config.tts.cosyvoice2_llm:
        load_cosyvoice2_llm(model, config.tts.cosyvoice2_llm)
    return model


def load_cosyvoice2_llm(model: OmniModel, path: str) -> list[str]:
    """The TTS LM's weights from CosyVoice 2's llm.pt (tensors only: weights_only); returns what it
    left out. Its units must be CosyVoice 2's S3 tokens."""
    if model.config.unit_vocab_size != S3UnitTokenizer.VOCAB_SIZE:
        raise ValueError(f"train.model.tts.cosyvoice2_llm speaks CosyVoice 2's {S3UnitTokenizer.VOCAB_SIZE} S3 units, but the "
                         f"units have a vocabulary of {model.config.unit_vocab_size}")
    state, left_out = released_to_ours(torch.load(path, map_location="cpu", weights_only=True),
                                       model.config.text_vocab_size, model.config.unit_vocab_size,
                                       model.config.eos_token_id, model.config.tts_vocab_size)
    model.speech_generator.model.load_state_dict(state)
    return left_out

