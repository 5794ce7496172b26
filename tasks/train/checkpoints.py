"""Checkpoints as versions of `checkpoint/NAME` in the artifact store.

A version holds the model (`model/`: config.json + safetensors, HF layout), the tokenizer
(`tokenizer/`), `state.json` (stage, step, whether the stage is complete, metrics) and, while a stage
is unfinished, `training_state.pt` (optimizer and schedule) so a killed run resumes exactly.
Its `config_hash` is the stage key: the hash of everything the stage's result depends on.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from omniforge.config.train import TokenizerConfig
from omniforge.model.modeling_omni import OmniModel
from omniforge.storage import ArtifactStore
from omniforge.storage.manifest import Manifest
from omniforge.storage.names import Kind
from omniforge.tasks.train.text_tokenizer import ChatFormat


@dataclass
class CheckpointState:
    stage: str                      # "init", "s2t", "tts" or "s2s"
    step: int
    steps: int
    complete: bool
    stage_key: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0            # wall-clock time the stage has trained so far (resumes add to it)


def save_checkpoint(store: ArtifactStore, name: str, model: OmniModel, tokenizer: PreTrainedTokenizerBase,
                    state: CheckpointState, parents: list[Manifest], config: dict[str, Any],
                    training_state: dict[str, Any] | None = None, flow_run_id: str | None = None) -> Manifest:
    writer = store.writer(Kind.checkpoint, name, parents=parents, config=config, config_hash=state.stage_key,
                          flow_run_id=flow_run_id)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(Path(folder) / "model")
        tokenizer.save_pretrained(Path(folder) / "tokenizer")
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                writer.add_file(path.relative_to(folder).as_posix(), path.read_bytes())
    writer.add_file("state.json", json.dumps(state.__dict__, indent=2).encode())
    if training_state is not None:
        buffer = io.BytesIO()
        torch.save(training_state, buffer)
        writer.add_file("training_state.pt", buffer.getvalue())
    writer.stats.update({k: v for k, v in state.__dict__.items() if k != "history"})
    return writer.publish()


def load_checkpoint(store: ArtifactStore, manifest: Manifest) -> tuple[OmniModel, PreTrainedTokenizerBase]:
    with tempfile.TemporaryDirectory() as folder:
        for filename, entry in manifest.files.items():
            if filename.startswith(("model/", "tokenizer/")):
                target = Path(folder) / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(store.read_bytes(entry.path))
        model = OmniModel.from_pretrained(Path(folder) / "model")
        tokenizer = AutoTokenizer.from_pretrained(Path(folder) / "tokenizer")
    return model, tokenizer


def checkpoint_chat(manifest: Manifest, tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
    """The chat format a checkpoint was trained with: its system prompt travels in the checkpoint's
    training settings, so it answers as trained whatever the current config says."""
    prompt = manifest.config.get("model", {}).get("tokenizer", {}).get("system_prompt", TokenizerConfig().system_prompt)
    return ChatFormat(tokenizer, prompt)


def checkpoint_state(store: ArtifactStore, manifest: Manifest) -> CheckpointState:
    return CheckpointState(**json.loads(store.read_bytes(manifest.files["state.json"].path)))


def training_state(store: ArtifactStore, manifest: Manifest) -> dict[str, Any]:
    """Optimizer, schedule and adapter state: tensors and plain values only (`weights_only`), so a
    file planted in a shared store cannot run code on the trainers that resume from it."""
    return torch.load(io.BytesIO(store.read_bytes(manifest.files["training_state.pt"].path)), weights_only=True)


def latest_for_key(store: ArtifactStore, name: str, stage_key: str) -> Manifest | None:
    """The newest checkpoint made for this stage key: complete (skip the stage) or not (resume)."""
    return store.find_version(Kind.checkpoint, name, stage_key)
