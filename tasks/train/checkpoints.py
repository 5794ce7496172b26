"""Checkpoints as versions of `checkpoint/NAME` in the artifact store.

A version holds the tokenizer (`tokenizer/`), `state.json` (stage, step, whether the stage is
complete, metrics) and either the model (`model/`: config.json + safetensors, HF layout: a finished
stage, what every consumer loads) or, while a stage is unfinished, its sharded training state
(`training/`: weights, optimizer, schedule; `training_state.py`), from which a killed run resumes
exactly, on any number of workers. Its `config_hash` is the stage key: the hash of everything the
stage's result depends on.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from omniforge.config.train import LoraConfig, TokenizerConfig
from omniforge.errors import InputError
from omniforge.model.modeling_omni import OmniModel
from omniforge.storage import ArtifactStore, VersionWriter
from omniforge.storage.manifest import Manifest
from omniforge.storage.names import Kind
from omniforge.tasks.train import training_state
from omniforge.tasks.train.lora import add_lora, merged
from omniforge.tasks.train.text_tokenizer import ChatFormat


class UnfinishedCheckpoint(InputError):
    """A checkpoint named where a model is needed is an unfinished stage's training state."""


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


def checkpoint_writer(store: ArtifactStore, name: str, state: CheckpointState, parents: list[Manifest],
                      config: dict[str, Any], flow_run_id: str | None = None) -> VersionWriter:
    return store.writer(Kind.checkpoint, name, parents=parents, config=config, config_hash=state.stage_key,
                        flow_run_id=flow_run_id)


def publish_checkpoint(writer: VersionWriter, model: OmniModel | None, tokenizer: PreTrainedTokenizerBase,
                       state: CheckpointState) -> Manifest:
    """Add the model (None: an unfinished stage, whose training state is already written), the
    tokenizer and the state, then publish."""
    with tempfile.TemporaryDirectory() as folder:
        if model is not None:
            model.save_pretrained(Path(folder) / "model")
        tokenizer.save_pretrained(Path(folder) / "tokenizer")
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                writer.add_local_file(path.relative_to(folder).as_posix(), path)
    writer.add_file("state.json", json.dumps(state.__dict__, indent=2).encode())
    writer.stats.update({k: v for k, v in state.__dict__.items() if k != "history"})
    return writer.publish()


def save_checkpoint(store: ArtifactStore, name: str, model: OmniModel, tokenizer: PreTrainedTokenizerBase,
                    state: CheckpointState, parents: list[Manifest], config: dict[str, Any],
                    flow_run_id: str | None = None) -> Manifest:
    return publish_checkpoint(checkpoint_writer(store, name, state, parents, config, flow_run_id), model, tokenizer,
                              state)


def load_checkpoint(store: ArtifactStore, manifest: Manifest,
                    part_way: bool = False) -> tuple[OmniModel, PreTrainedTokenizerBase]:
    """The model and tokenizer of a finished stage's version. `part_way`: an unfinished stage's version
    gives its model as it stood at its step (to compare a run's progress), instead of an error."""
    finished = "model/config.json" in manifest.files
    if not finished and not part_way:
        raise UnfinishedCheckpoint(f"{manifest.ref()} is an unfinished {manifest.stats.get('stage')} stage (step "
                                   f"{manifest.stats.get('step')} of {manifest.stats.get('steps')}): it holds "
                                   "sharded training state, not a model; finish it (`omniforge train` with the same "
                                   "config resumes it) or name a finished version (checkpoint/NAME@VERSION)")
    with tempfile.TemporaryDirectory() as folder:
        for filename, entry in manifest.files.items():
            if filename.startswith(("model/", "tokenizer/")):
                target = Path(folder) / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(store.read_bytes(entry.path))
        model = OmniModel.from_pretrained(Path(folder) / "model") if finished else _part_way(store, manifest)
        tokenizer = AutoTokenizer.from_pretrained(Path(folder) / "tokenizer")
    return model, tokenizer


def _part_way(store: ArtifactStore, manifest: Manifest) -> OmniModel:
    """The stage's starting model with the weights of its training state read in, adapters merged."""
    model, _ = load_checkpoint(store, store.manifest(manifest.parent_of(Kind.checkpoint)))
    lora = manifest.config.get(manifest.stats["stage"], {}).get("lora")
    if lora is not None:
        add_lora(model, LoraConfig(**lora))
    training_state.load_weights(store, manifest, model)
    return merged(model) if lora is not None else model


def checkpoint_chat(manifest: Manifest, tokenizer: PreTrainedTokenizerBase) -> ChatFormat:
    """The chat format a checkpoint was trained with: its system prompt travels in the checkpoint's
    training settings, so it answers as trained whatever the current config says."""
    prompt = manifest.config.get("model", {}).get("tokenizer", {}).get("system_prompt", TokenizerConfig().system_prompt)
    return ChatFormat(tokenizer, prompt)


def checkpoint_state(store: ArtifactStore, manifest: Manifest) -> CheckpointState:
    return CheckpointState(**json.loads(store.read_bytes(manifest.files["state.json"].path)))


def latest_for_key(store: ArtifactStore, name: str, stage_key: str) -> Manifest | None:
    """The newest checkpoint made for this stage key: complete (skip the stage) or not (resume)."""
    return store.find_version(Kind.checkpoint, name, stage_key)
