"""An unfinished stage's training state in its checkpoint version, as a `torch.distributed.checkpoint`.

Every worker writes its own shards of the weights and the optimizer state straight into the store (no
worker ever holds the whole model), and any number of workers reads them back: DCP reshards, so a
stage saved by two workers resumes on one, and the reverse. Tensors go through DCP; the few plain
values (the optimizer's parameter groups and the schedule) are JSON. Nothing in it is unpickled beyond
DCP's own metadata classes, so a file planted in a shared store cannot run code on the trainers.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint.metadata import StorageMeta

from omniforge.storage import ArtifactStore, FileEntry
from omniforge.storage.manifest import Manifest

FOLDER = "training"               # the shards and their metadata, under the version's data folder
PLAIN = "training/plain.json"     # parameter groups and schedule
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_METADATA_GLOBALS = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
                     ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP pickles its metadata; this reads only the classes that metadata is made of."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module == _METADATA_MODULE or (module, name) in _METADATA_GLOBALS
                   or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)))
        if not allowed:
            raise pickle.UnpicklingError(f"training state metadata: {module}.{name} is not part of a checkpoint")
        return super().find_class(module, name)


class _StoreReader(FsspecReader):
    def read_metadata(self, *args: Any, **kwargs: Any):
        with self.fs.create_stream(self._get_metadata_path(kwargs.get("rank")), "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _TensorsOnly(DefaultLoadPlanner):
    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        raise pickle.UnpicklingError(f"training state: {read_item.dest_index.fqn} is stored as a pickle, but a "
                                     "checkpoint's training state holds tensors only")


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


@contextmanager
def _quiet_alone() -> Iterator[None]:
    """One process (no process group) is meant: DCP's warning that it assumes so says nothing new."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The state DCP stores (weights, optimizer moments) and the optimizer's plain parameter groups,
    both keyed by parameter name whatever wraps the model (DDP, FSDP, none)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optimizer_state = get_state_dict(model, optimizer)
    return {"model": weights, "optimizer": optimizer_state["state"]}, optimizer_state["param_groups"]


def save(store: ArtifactStore, data_dir: str, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, FileEntry]:
    """Every worker: write this worker's shards under `data_dir` (the new version's folder, the same on
    all workers) and return the manifest entries of the files it wrote (rank 0: the metadata and the
    plain values too)."""
    import torch.distributed.checkpoint as dcp

    tensors, groups = _tensors(model, optimizer)
    folder = f"{data_dir}/{FOLDER}"
    with _quiet_alone():
        dcp.save(tensors, storage_writer=FsspecWriter(store.uri(folder), **store.options))
    rank = _rank()
    if rank == 0:
        store.fs.pipe_file(store.path(f"{data_dir}/{PLAIN}"),
                           json.dumps({"param_groups": groups, "scheduler": scheduler.state_dict()}).encode())
    mine = (f"__{rank}_",) + ((".metadata", "plain.json") if rank == 0 else ())
    names = sorted(p.rsplit("/", 1)[-1] for p in store.fs.ls(store.path(folder), detail=False))
    return {f"{FOLDER}/{name}": store.describe(f"{folder}/{name}") for name in names if name.startswith(mine)}


def has_state(manifest: Manifest) -> bool:
    return PLAIN in manifest.files


def load(store: ArtifactStore, manifest: Manifest, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Every worker: read its part of `manifest`'s training state into the (wrapped) model, the
    optimizer and the schedule, however many workers wrote it."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    plain = json.loads(store.read_bytes(manifest.files[PLAIN].path))
    tensors, _ = _tensors(model, optimizer)
    _read(store, manifest, tensors)
    set_state_dict(model, optimizer, model_state_dict=tensors["model"],
                   optim_state_dict={"state": tensors["optimizer"], "param_groups": plain["param_groups"]})
    scheduler.load_state_dict(plain["scheduler"])


def load_weights(store: ArtifactStore, manifest: Manifest, model: nn.Module) -> None:
    """Only the weights of `manifest`'s training state, into a plain model in one process: the stage's
    model as it stood part-way, to look at (resuming takes `load`)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    tensors = {"model": get_model_state_dict(model)}
    _read(store, manifest, tensors)
    set_model_state_dict(model, tensors["model"])


def _read(store: ArtifactStore, manifest: Manifest, tensors: dict[str, Any]) -> None:
    """Fill `tensors` (DCP's nested state) in place from `manifest`'s shards; any other entries the
    shards hold are left unread."""
    import torch.distributed.checkpoint as dcp

    folder = manifest.files[PLAIN].path.rsplit("/", 1)[0]
    with _quiet_alone():
        dcp.load(tensors, storage_reader=_StoreReader(store.uri(folder), **store.options), planner=_TensorsOnly())
