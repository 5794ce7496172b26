"""The training loop of every stage, run by each Ray Train worker (or in-process, one worker).

Stages run in order, each starting from the previous stage's checkpoint. A stage whose key has a
complete checkpoint is skipped; one with an incomplete checkpoint resumes from it (weights,
optimizer, schedule and position in the batch order), so a killed run ends with the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from omniforge.config import PipelineConfig
from omniforge.config.train import StageConfig, TrainConfig
from omniforge.hashing import stable_hash
from omniforge.model.stage_objectives import StageBatch, StageObjective, set_trainable
from omniforge.storage import ArtifactStore, store_from_config
from omniforge.storage.manifest import Manifest
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.train.checkpoints import (
    CheckpointState,
    checkpoint_state,
    latest_for_key,
    load_checkpoint,
    save_checkpoint,
    training_state,
)
from omniforge.tasks.train.data import BatchMaker, DialogueIndex, batch_plan
from omniforge.tasks.train.lora import adapter_state, add_lora, load_adapter_state, merged
from omniforge.tasks.train.text_tokenizer import ChatFormat


@dataclass
class Workers:
    """This process's place among the training workers."""

    rank: int = 0
    world: int = 1
    distributed: bool = False

    @classmethod
    def from_ray(cls) -> "Workers":
        import ray.train

        context = ray.train.get_context()
        return cls(context.get_world_rank(), context.get_world_size(), True)

    def prepare(self, module: nn.Module, strategy: str) -> nn.Module:
        if not self.distributed:
            return module
        from ray.train.torch import prepare_model

        return prepare_model(module, parallel_strategy=strategy)

    def barrier(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        if not (self.distributed and torch.distributed.is_initialized()):
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return float(tensor) / self.world

    def report(self, metrics: dict[str, float]) -> None:
        if self.distributed:
            import ray.train

            ray.train.report(metrics)


def stage_key(config: TrainConfig, stage: str, start: Manifest, speech: Manifest, units: Manifest) -> str:
    """Everything a stage's result depends on."""
    return stable_hash({"stage": stage, "settings": config.stage(stage).model_dump(mode="json"),
                        "seed": config.seed, "augment": config.augment.model_dump(mode="json"),
                        "bucket_window": config.bucket_window, "workers": config.workers,
                        "start": str(start.ref()), "speech": str(speech.ref()), "units": str(units.ref())})


def lr_factor(settings: StageConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine or linear decay to zero, or constant."""
    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        if settings.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if settings.schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0
    return factor


class StageRun:
    """One stage of training on one worker."""

    def __init__(self, store: ArtifactStore, config: PipelineConfig, stage: str, start: Manifest, speech: Manifest,
                 units: Manifest, workers: Workers, flow_run_id: str | None) -> None:
        self.store, self.config, self.stage, self.workers = store, config, stage, workers
        self.train, self.settings = config.train, config.train.stage(stage)
        self.start, self.speech, self.units, self.flow_run_id = start, speech, units, flow_run_id
        self.key = stage_key(self.train, stage, start, speech, units)
        self.device = torch.device("cuda" if self.train.use_gpu and torch.cuda.is_available() else "cpu")

    def log(self, message: str) -> None:
        if self.workers.rank == 0:
            print(f"[{self.stage}] {message}", flush=True)

    def run(self) -> Manifest:
        found = latest_for_key(self.store, self.train.name, self.key)
        if found is not None and found.stats.get("complete"):
            self.log(f"already trained: {found.ref()}")
            return found
        model, tokenizer = load_checkpoint(self.store, found or self.start)
        trainable = self.train.trainable(self.stage)
        lora = self.settings.lora
        if lora is not None:  # the LLM trains through adapters on the starting checkpoint's weights
            if found is not None:
                model.llm = load_checkpoint(self.store, self.start)[0].llm
            trainable = [p for p in trainable if p != "llm" and not p.startswith("llm.")]
        counts = set_trainable(model, trainable)
        if lora is not None:
            add_lora(model, lora)
            adapters = sum(p.numel() for p in model.llm.parameters() if p.requires_grad)
            counts = {"trainable": counts["trainable"] + adapters, "frozen": counts["frozen"]}
            trainable = trainable + [f"llm LoRA r={lora.rank} on {', '.join(lora.target_modules)}"]
        self.log(f"from {(found or self.start).ref()}; trainable {counts['trainable']:,} parameters "
                 f"({', '.join(trainable)}), frozen {counts['frozen']:,}")
        model.to(self.device).train()
        model.speech_encoder.eval()  # frozen in every stage: no dropout either
        state = (checkpoint_state(self.store, found) if found is not None
                 else CheckpointState(self.stage, 0, self.settings.steps, False, self.key))
        final = self._loop(model, tokenizer, state, found)
        self.workers.barrier()
        return final if final is not None else latest_for_key(self.store, self.train.name, self.key)

    def _loop(self, model, tokenizer, state: CheckpointState, found: Manifest | None) -> Manifest | None:
        settings, train, workers = self.settings, self.train, self.workers
        index = DialogueIndex.build(self.store, self.speech, self.units, need_units=self.stage != "s2t",
                                    need_dialogue=self.stage != "tts")
        if index.skipped:
            self.log(f"left out: {index.skipped}")
        maker = BatchMaker(self.store, index, ChatFormat(tokenizer, train.model.tokenizer.system_prompt),
                           model.config.encoder_config.num_mel_bins, train.augment, train.seed,
                           with_speech=self.stage != "tts",
                           unit_vocab_size=None if self.stage == "s2t" else model.config.unit_vocab_size)
        objective = workers.prepare(StageObjective(model, self.stage), train.strategy)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings))
        if found is not None:
            saved = training_state(self.store, found)
            if "lora" in saved:
                load_adapter_state(model, saved["lora"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        first = state.step * settings.grad_accum
        batches = maker.stream(batch_plan(index, train.seed, settings.batch_size, train.bucket_window, workers.rank,
                                          workers.world, start=first), first, workers.rank, workers.world)
        writer = self._tensorboard()
        final = None
        clock = time.perf_counter()
        while state.step < settings.steps:
            metrics = self.train_step(objective, optimizer, scheduler, parameters, batches)
            state.step += 1
            state.seconds, clock = state.seconds + time.perf_counter() - clock, time.perf_counter()
            state.metrics = metrics
            if state.step % train.log_every == 0 or state.step == settings.steps:
                state.history.append({"step": state.step, **metrics})
                workers.report({"stage_step": state.step, **metrics})
                self.log(f"step {state.step}/{settings.steps} loss {metrics['loss']:.4f} lr {metrics['lr']:.2e} "
                         f"{metrics['tokens_per_s']:.0f} tokens/s")
                if writer is not None:
                    for name, value in metrics.items():
                        writer.add_scalar(f"{self.stage}/{name}", value, state.step)
            if state.step % (settings.checkpoint_every or train.checkpoint_every) == 0 or state.step == settings.steps:
                final = self._save(model, tokenizer, state, optimizer, scheduler)
        if writer is not None:
            writer.close()
        return final

    def train_step(self, objective, optimizer, scheduler, parameters, batches: Iterator[tuple[int, StageBatch]]
                   ) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches from `batches`."""
        settings, workers = self.settings, self.workers
        began, tokens, total = time.perf_counter(), 0, 0.0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.train.precision == "bf16")
        for _ in range(settings.grad_accum):
            epoch, batch = next(batches)
            batch = batch.to(self.device)
            with autocast:
                loss = objective(batch) / settings.grad_accum
            loss.backward()
            total += float(loss.detach())
            tokens += batch.target_tokens(self.stage)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - began
        return {"loss": workers.mean(total), "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                "tokens_per_s": workers.mean(tokens / seconds) * workers.world, "epoch": float(epoch)}

    def _tensorboard(self):
        if self.workers.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(f"{self.train.log_dir}/{self.train.name}/{self.key}")

    def _save(self, model, tokenizer, state: CheckpointState, optimizer, scheduler) -> Manifest | None:
        state.complete = state.step >= self.settings.steps
        manifest = None
        if self.workers.rank == 0:
            extra = None if state.complete else {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            if self.settings.lora is not None:
                if extra is not None:
                    extra["lora"] = adapter_state(model)
                model = merged(model)
            manifest = save_checkpoint(self.store, self.train.name, model, tokenizer, state,
                                       [self.speech, self.units, self.start], self.train.model_dump(mode="json"),
                                       extra, self.flow_run_id)
            self.log(f"saved {manifest.ref()} (step {state.step}{', complete' if state.complete else ''})")
        self.workers.barrier()
        return manifest


def train_stages(payload: dict[str, Any], workers: Workers | None = None) -> list[str]:
    """Run the configured stages in order; returns each stage's final checkpoint ref. This is the
    Ray Train loop (payload: config, start, speech, units refs, flow_run_id) and the local one."""
    workers = workers or Workers.from_ray()
    config = PipelineConfig.model_validate(payload["config"])
    store = store_from_config(config.store)
    start = store.manifest(payload["start"])
    speech, units = store.manifest(payload["speech"]), store.manifest(payload["units"])
    done = []
    with torch_threads(config.train.torch_threads):
        for stage in config.train.stages:
            if not config.train.stage(stage).enabled:
                continue
            start = StageRun(store, config, stage, start, speech, units, workers, payload.get("flow_run_id")).run()
            done.append(str(start.ref()))
    return done
