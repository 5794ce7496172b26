"""FSDP for the training loop: FSDP2 (`fully_shard`), one unit per transformer block.

FSDP2 and not FSDP1 (what Ray's `prepare_model(parallel_strategy="fsdp")` applies, with no wrap
policy): it shards each parameter on its own (DTensor), so frozen weights (the speech encoder, a LoRA
stage's base LLM) and trainable ones share a unit without `use_orig_params` or flat-parameter rules,
`torch.distributed.checkpoint.state_dict` reads and writes it on any worker count, and it is the API
torch keeps developing (FSDP1 is deprecated). Ray Train only sets up the process group.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel


def block_classes(module: nn.Module) -> set[str]:
    """The transformer blocks of every transformers model inside `module`: the classes its authors
    list as never split across devices (`_no_split_modules`), e.g. Qwen2DecoderLayer."""
    listed = {name for part in module.modules() if isinstance(part, PreTrainedModel)
              for name in part._no_split_modules or []}
    return {type(part).__name__ for part in module.modules()} & listed


def mixed_precision(precision: str, device: torch.device):
    """bf16 parameters with fp32 gradient reduction on GPU; fp32 everywhere on CPU, where bf16 matmuls
    are slow and gloo reduces fp32 anyway."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision == "bf16" and device.type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(root: nn.Module, model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """Shard `root` (the stage objective around `model`) across all workers: each transformer block is
    one unit (gathered for its forward, freed after), the rest of the model is the root unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    policy = mixed_precision(precision, device)
    blocks = block_classes(model)
    for part in list(model.modules()):
        if type(part).__name__ in blocks:
            fully_shard(part, mesh=mesh, mp_policy=policy)
    fully_shard(root, mesh=mesh, mp_policy=policy)
    return root


def checkpoint_activations(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass instead of keeping them
    (transformers' own switch, on every model inside that supports it)."""
    for part in model.modules():
        if isinstance(part, PreTrainedModel) and part.supports_gradient_checkpointing:
            part.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(part, FSDPModule) for part in module.modules())


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU, gathered one unit at a time (a collective: every
    worker calls it; the others get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
