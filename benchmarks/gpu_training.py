"""The training rows of benchmarks/gpu.py: stage s2t steps at the paper's shapes, their tokens/s and
model FLOPs utilisation (the FLOPs torch counts a step executing, per second, over the chip's peak)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.common import result_row
from benchmarks.gpu_shapes import Clock, Shapes
from omniforge.model.mel import INPUT_SAMPLE_RATE, WhisperLogMel
from omniforge.model.modeling_omni import IGNORE_INDEX, OmniModel
from omniforge.model.stage_objectives import StageBatch, StageObjective, set_trainable

MFU_TARGET = 0.4  # the target for the 1.5B full fine-tune on an H100; the LoRA row is held to it too
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40": 181e12}  # dense bf16 tensor cores


def s2t_batch(model: OmniModel, shapes: Shapes, text_tokens: int, device: torch.device) -> StageBatch:
    """Dialogues of one spoken question and a text answer; the loss is on the answer's tokens."""
    generator = torch.Generator().manual_seed(5)
    mel = WhisperLogMel(model.config.encoder_config.num_mel_bins)
    wave_batch = [0.1 * torch.randn(int(shapes.train_speech_seconds * INPUT_SAMPLE_RATE), generator=generator)
                  for _ in range(shapes.train_batch)]
    features, lengths = mel.batch(wave_batch)
    ids, labels = [], []
    for _ in range(shapes.train_batch):
        row = torch.randint(0, model.config.speech_token_id - 2, (text_tokens + 20,), generator=generator)
        row[10] = model.config.speech_token_id
        label = row.clone()
        label[:20] = IGNORE_INDEX  # the prompt and the question carry no loss
        ids.append(row)
        labels.append(label)
    return StageBatch(ids, labels, [], features, lengths, [], []).to(device)


def train_row(model: OmniModel, shapes: Shapes, device: torch.device, clock: Clock, label: str,
              prefixes: list[str], lora: bool, peak: float, loss_chunk: int) -> tuple[list[dict], dict]:
    """Stage s2t steps (bf16 autocast, AdamW) as the project's loop takes them: tokens/s and MFU. The
    loss computes the logits of `loss_chunk` labelled positions at a time (`train.loss_chunk_tokens`)."""
    set_trainable(model, prefixes)
    if lora:
        from peft import LoraConfig, get_peft_model

        model.llm = get_peft_model(model.llm, LoraConfig(r=16, lora_alpha=32, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    objective = StageObjective(model, "s2t", loss_chunk)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device.type == "cuda")
    batch = s2t_batch(model, shapes, shapes.train_text_tokens if lora else shapes.full_train_text_tokens, device)
    tokens = sum(len(ids) for ids in batch.input_ids) + int(sum(
        model.speech_projector.output_lengths((batch.mel_lengths + 1) // 2)))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = objective(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flops = counted_flops(model, step)
    step()
    start = clock()
    for _ in range(shapes.train_steps):
        step()
    seconds = (clock() - start) / shapes.train_steps
    rate = tokens / seconds
    achieved = flops / seconds
    # MFU: the FLOPs a step executes (counted by torch) per second, over the chip's peak
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    rows = [result_row(f"s2t training step, {label}: model FLOPs utilisation ({precision}, batch {shapes.train_batch}, "
                       f"loss chunk {loss_chunk})",
                       achieved, peak, "FLOP/s", MFU_TARGET) | {"tokens_per_s": round(rate)}]
    return rows, {"step_s": seconds, "tokens_per_step": tokens, "tokens_per_s": rate, "flops_per_step": flops,
                  "achieved_flops": achieved, "mfu": achieved / peak,
                  "trainable_parameters": trainable_parameters}


def counted_flops(model: OmniModel, step: Callable[[], None]) -> int:
    """The FLOPs one step executes, counted by torch. The LLM's attention runs eagerly for this
    step: torch's counter has no formula for grouped-query SDPA (Qwen2.5 has fewer KV heads)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = model.llm.config  # the LLM's own (from_config copies the one it is given)
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        with FlopCounterMode(display=False) as counter:
            step()
    finally:
        config._attn_implementation = previous
    return counter.get_total_flops()


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[str, float]:
    """The chip's name and its peak FLOP/s: the data-sheet dense bf16 figure for GPUs we know,
    else the rate of a large matrix product measured here (CPUs)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    known = next((flops for chip, flops in PEAK_BF16_FLOPS.items() if chip in name), None)
    if known is not None:
        return name, known
    size = 2048
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    clock = Clock(device)
    start = clock()
    for _ in range(5):
        a @ b
    return f"{name} (peak measured: {size}^3 matmul)", 5 * 2 * size ** 3 / (clock() - start)
