"""Parameter names of the released LLaMA-Omni 2 checkpoints <-> ours, in one table.

The released model is a Qwen2ForCausalLM whose `model.` also holds the speech encoder (with
openai-whisper parameter names) and the adapter; the TTS LM and its fusion sit under
`speech_generator.`. Ours keeps the parts apart (`speech_encoder.` with transformers' Whisper
names, `speech_projector.`, `llm.`, `speech_generator.`).

Assumption to check against a real release: the TTS vocabulary is the text vocabulary, then the
units, then <sep> (`OmniConfig.unit_offset`, `sep_token_id`); set `text_vocab_size` if it differs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PretrainedConfig

from omniforge.model.configuration_omni import OmniConfig
from omniforge.model.modeling_omni import OmniModel

# (released pattern, ours pattern); "{n}" is a layer number. First match wins, in both directions.
NAME_TABLE: list[tuple[str, str]] = [
    ("model.speech_encoder.conv1.{p}", "speech_encoder.conv1.{p}"),
    ("model.speech_encoder.conv2.{p}", "speech_encoder.conv2.{p}"),
    ("model.speech_encoder.positional_embedding", "speech_encoder.embed_positions.weight"),
    ("model.speech_encoder.blocks.{n}.attn.query.{p}", "speech_encoder.layers.{n}.self_attn.q_proj.{p}"),
    ("model.speech_encoder.blocks.{n}.attn.key.{p}", "speech_encoder.layers.{n}.self_attn.k_proj.{p}"),
    ("model.speech_encoder.blocks.{n}.attn.value.{p}", "speech_encoder.layers.{n}.self_attn.v_proj.{p}"),
    ("model.speech_encoder.blocks.{n}.attn.out.{p}", "speech_encoder.layers.{n}.self_attn.out_proj.{p}"),
    ("model.speech_encoder.blocks.{n}.attn_ln.{p}", "speech_encoder.layers.{n}.self_attn_layer_norm.{p}"),
    ("model.speech_encoder.blocks.{n}.mlp.0.{p}", "speech_encoder.layers.{n}.fc1.{p}"),
    ("model.speech_encoder.blocks.{n}.mlp.2.{p}", "speech_encoder.layers.{n}.fc2.{p}"),
    ("model.speech_encoder.blocks.{n}.mlp_ln.{p}", "speech_encoder.layers.{n}.final_layer_norm.{p}"),
    ("model.speech_encoder.ln_post.{p}", "speech_encoder.layer_norm.{p}"),
    ("model.speech_projector.{rest}", "speech_projector.{rest}"),
    ("speech_generator.{rest}", "speech_generator.{rest}"),
    ("lm_head.{p}", "llm.lm_head.{p}"),
    ("model.{rest}", "llm.model.{rest}"),
]


def _regex(pattern: str) -> re.Pattern:
    escaped = re.escape(pattern).replace(r"\{n\}", r"(?P<n>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile("^" + escaped.replace(r"\{rest\}", r"(?P<rest>.+)") + "$")


_FORWARD = [(_regex(released), ours) for released, ours in NAME_TABLE]
_BACKWARD = [(_regex(ours), released) for released, ours in NAME_TABLE]


def _rename(name: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for regex, target in rules:
        match = regex.match(name)
        if match:
            return target.format(**match.groupdict())
    raise KeyError(f"no rule maps parameter {name!r}")


def released_to_ours(name: str) -> str:
    return _rename(name, _FORWARD)


def ours_to_released(name: str) -> str:
    return _rename(name, _BACKWARD)


def parse_stream_params(text: str) -> tuple[int, int]:
    """The released config keeps (R, W) as a string like "(3,10)"; read it without eval."""
    numbers = [int(n) for n in re.findall(r"\d+", str(text))]
    if len(numbers) != 2:
        raise ValueError(f"stream_params {text!r} is not '(R, W)'")
    return numbers[0], numbers[1]


def config_from_released(released: dict, encoder_config: PretrainedConfig | dict, **overrides) -> OmniConfig:
    """OmniConfig from a released config.json (a Qwen2 config plus speech keys). The encoder's
    architecture is not in that file (the released code loads whisper-large-v3 by path)."""
    llm = {k: v for k, v in released.items() if not k.startswith(("speech_", "stream_", "unit_"))}
    read, write = parse_stream_params(released.get("stream_params", "(3,10)"))
    settings = dict(encoder_config=encoder_config, llm_config=llm, tts_config=released["speech_generator"],
                    speech_encoder_ds_rate=released.get("speech_encoder_ds_rate", 5),
                    unit_vocab_size=released.get("unit_vocab_size", 6561), stream_read=read, stream_write=write,
                    eos_token_id=released.get("eos_token_id"))
    return OmniConfig(**{**settings, **overrides})


def load_released(path: str | Path, encoder_config: PretrainedConfig | dict, **overrides) -> OmniModel:
    """Load a released LLaMA-Omni 2 checkpoint directory (config.json + *.safetensors)."""
    folder = Path(path)
    config = config_from_released(json.loads((folder / "config.json").read_text()), encoder_config, **overrides)
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update({released_to_ours(k): v for k, v in load_file(file).items()})
    model = OmniModel(config)
    for target, source in model.all_tied_weights_keys.items():  # tied heads are not stored twice
        state.setdefault(target, state[source])
    model.load_state_dict(state, strict=True)
    return model


def export_released_state(model: OmniModel) -> dict[str, torch.Tensor]:
    """Our state dict under the released names (the inverse of `load_released`)."""
    return {ours_to_released(k): v for k, v in model.state_dict().items()}
