"""OmniConfig: the whole model's config, one sub-config per part (HF style, saved as config.json)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig


def _sub_config(value: PretrainedConfig | dict | None, default_type: str) -> PretrainedConfig:
    if isinstance(value, PretrainedConfig):
        return value
    data = dict(value or {})
    return AutoConfig.for_model(data.pop("model_type", default_type), **data)


class OmniConfig(PretrainedConfig):
    """Speech encoder (Whisper) + adapter + LLM + TTS LM with gate fusion + read-write streaming.

    Field names follow the released LLaMA-Omni 2 config where one exists
    (`speech_encoder_ds_rate`, `speech_encoder_hidden_size`, `unit_vocab_size`, `stream_params`).
    """

    model_type = "omniforge"

    def __init__(
        self,
        encoder_config: PretrainedConfig | dict | None = None,
        llm_config: PretrainedConfig | dict | None = None,
        tts_config: PretrainedConfig | dict | None = None,
        speech_encoder_ds_rate: int = 5,
        adapter_hidden_size: int = 2048,
        unit_vocab_size: int = 6561,
        text_vocab_size: int | None = None,
        stream_read: int = 3,
        stream_write: int = 10,
        stream_aligned: bool = False,
        stream_lookahead: int = 1,
        gate_init_bias: float | None = None,
        phoneme_vocab_size: int = 0,
        phonemes_per_token: int = 8,
        pronunciation_voice: str | None = None,
        speech_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.encoder_config = _sub_config(encoder_config, "whisper")
        self.llm_config = _sub_config(llm_config, "qwen2")
        self.tts_config = _sub_config(tts_config, "qwen2")
        self.speech_encoder_ds_rate = speech_encoder_ds_rate
        self.adapter_hidden_size = adapter_hidden_size
        self.unit_vocab_size = unit_vocab_size
        # the TTS LM shares the LLM's text tokenizer: text ids first, then units, then <sep> (and <read>, aligned)
        self.text_vocab_size = text_vocab_size or self.llm_config.vocab_size
        self.stream_read = stream_read
        self.stream_write = stream_write
        self.stream_aligned = stream_aligned      # the TTS LM says <read> when a text token is spoken (read_write.py)
        self.stream_lookahead = stream_lookahead  # aligned: text tokens read ahead of the one being spoken
        self.gate_init_bias = gate_init_bias  # only how a fresh gate starts (see GateFusion)
        # pronunciations (model/pronunciation.py): 0 phonemes, none read; the voice names who pronounces (espeak-ng)
        self.phoneme_vocab_size = phoneme_vocab_size
        self.phonemes_per_token = phonemes_per_token
        self.pronunciation_voice = pronunciation_voice
        self.speech_token_id = speech_token_id
        super().__init__(eos_token_id=eos_token_id, **kwargs)

    @property
    def speech_encoder_hidden_size(self) -> int:
        return self.encoder_config.d_model

    @property
    def tts_vocab_size(self) -> int:
        return self.text_vocab_size + self.unit_vocab_size + (2 if self.stream_aligned else 1)

    @property
    def unit_offset(self) -> int:
        """TTS-LM id of speech unit 0."""
        return self.text_vocab_size

    @property
    def sep_token_id(self) -> int:
        """TTS-LM id of `<sep>` (the text is finished)."""
        return self.text_vocab_size + self.unit_vocab_size

    @property
    def read_token_id(self) -> int | None:
        """TTS-LM id of `<read>` (aligned read-write only): the speech of a text token is written."""
        return self.sep_token_id + 1 if self.stream_aligned else None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name in ("encoder_config", "llm_config", "tts_config"):
            out[name] = getattr(self, name).to_dict()
        return out
