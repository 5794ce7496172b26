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
from torch.distributed.tensor import DTensor

from omniforge.config import PipelineConfig
from omniforge.config.train import StageConfig, TrainConfig
from omniforge.hashing import stable_hash
from omniforge.model.modeling_omni import OmniModel
from omniforge.model.stage_objectives import StageBatch, StageObjective, set_trainable
from omniforge.storage import ArtifactStore, store_from_config
from omniforge.storage.manifest import Manifest
from omniforge.storage.names import ArtifactRef, Kind
from omniforge.tasks.common.pronunciation import pronouncer_for
from omniforge.tasks.common.threads import torch_threads
from omniforge.tasks.train import training_state
from omniforge.tasks.train.checkpoints import (
    CheckpointState,
    checkpoint_state,
    checkpoint_writer,
    latest_for_key,
    load_checkpoint,
    publish_checkpoint,
)
from omniforge.tasks.train.data import BatchMaker, DialogueIndex, batch_plan
from omniforge.tasks.train.lora import add_lora, merged
from omniforge.tasks.train.sharding import checkpoint_activations, full_state, is_sharded, shard
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

    def prepare(self, objective: nn.Module, model: nn.Module, train: TrainConfig, device: torch.device) -> nn.Module:
        """`objective` (around `model`, still on the CPU) on `device` as the workers train it: DDP replicas
        or FSDP shards (each block moved to the device as it is sharded, never the whole model)."""
        if not self.distributed:
            return objective.to(device)
        if train.strategy == "fsdp":
            return shard(objective, model, train.precision, device)
        from ray.train.torch import prepare_model

        return prepare_model(objective, parallel_strategy="ddp")  # moves it to this worker's device

    def share(self, value: Any) -> Any:
        """Rank 0's `value`, on every worker."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every worker's `value`, on every worker."""
        if not self.distributed:
            return [value]
        values = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

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


@dataclass
class Training:
    """What a worker trains with: the (wrapped) objective, its optimizer and schedule, its batches."""

    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    parameters: list[nn.Parameter]
    batches: Iterator[tuple[int, StageBatch]]


def stage_key(config: TrainConfig, stage: str, start: Manifest, speech: Manifest, units: Manifest) -> str:
    """Everything a stage's result depends on (not how its steps are split among workers)."""
    settings = config.stage(stage)
    return stable_hash({"stage": stage, "settings": settings.model_dump(mode="json", exclude={"grad_accum"}),
                        "micro_batches": micro_batches(config, settings), "precision": config.precision,
                        "seed": config.seed, "augment": config.augment.model_dump(mode="json"),
                        "bucket_window": config.bucket_window,
                        "start": str(start.ref()), "speech": str(speech.ref()), "units": str(units.ref())})


def micro_batches(config: TrainConfig, settings: StageConfig) -> int:
    """Micro-batches per optimizer step, all workers together: with the batch size, what a step sees.
    Workers x grad_accum may be split either way (2 x 1 or 1 x 2 train alike), so a stage saved by
    some number of workers resumes on another."""
    return config.workers * settings.grad_accum


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
        if found is not None and not training_state.has_state(found):
            found = None  # saved before training state was sharded: the stage starts over
        self.log(f"from {(found or self.start).ref()}")
        model, tokenizer = self.model_to_train()
        state = (checkpoint_state(self.store, found) if found is not None
                 else CheckpointState(self.stage, 0, self.settings.steps, False, self.key))
        final = self._loop(model, tokenizer, state, found)
        self.workers.barrier()
        return final if final is not None else latest_for_key(self.store, self.train.name, self.key)

    def model_to_train(self) -> tuple[OmniModel, Any]:
        """The starting checkpoint's model with this stage's parts trainable (LoRA adapters on the LLM
        where configured), on the CPU (`start_training` places it); a resumed stage's weights come with
        its training state."""
        model, tokenizer = load_checkpoint(self.store, self.start)
        trainable = self.train.trainable(self.stage)
        lora = self.settings.lora
        if lora is not None:  # the LLM trains through adapters on the starting checkpoint's weights
            trainable = [p for p in trainable if p != "llm" and not p.startswith("llm.")]
        counts = set_trainable(model, trainable)
        if lora is not None:
            torch.manual_seed(self.train.seed)  # the same fresh adapters on every worker (FSDP does not broadcast)
            add_lora(model, lora)
            adapters = sum(p.numel() for p in model.llm.parameters() if p.requires_grad)
            counts = {"trainable": counts["trainable"] + adapters, "frozen": counts["frozen"]}
            trainable = trainable + [f"llm LoRA r={lora.rank} on {', '.join(lora.target_modules)}"]
        self.log(f"trainable {counts['trainable']:,} parameters ({', '.join(trainable)}), frozen {counts['frozen']:,}")
        model.train()
        model.speech_encoder.eval()  # frozen in every stage: no dropout either
        if self.train.activation_checkpointing:
            checkpoint_activations(model)
        return model, tokenizer

    def start_training(self, model: OmniModel, tokenizer, step: int, found: Manifest | None) -> Training:
        """The model as the workers train it, its optimizer and schedule (restored from `found`'s
        training state when resuming) and this worker's batches from `step` on."""
        settings, train, workers = self.settings, self.train, self.workers
        aligned = self.stage != "s2t" and model.config.stream_aligned
        index = DialogueIndex.build(self.store, self.speech, self.units, need_units=self.stage != "s2t",
                                    need_dialogue=self.stage != "tts", need_words=aligned)
        if index.skipped:
            self.log(f"left out: {index.skipped}")
        corpus = self.rehearsal_corpus(aligned)
        batch_index, rehearsal = (index, None) if corpus is None else index.rehearsing(corpus, settings.rehearsal)
        maker = BatchMaker(self.store, batch_index, ChatFormat(tokenizer, train.model.tokenizer.system_prompt),
                           model.config.encoder_config.num_mel_bins, train.augment, train.seed,
                           with_speech=self.stage != "tts",
                           unit_vocab_size=None if self.stage == "s2t" else model.config.unit_vocab_size,
                           unit_rate=self.units.config["frame_rate"] if aligned else None,
                           pronounce=None if self.stage == "s2t" else pronouncer_for(model.config, tokenizer),
                           rehearsal=rehearsal)
        objective = workers.prepare(StageObjective(model, self.stage, train.loss_chunk_tokens), model, train,
                                    self.device)
        parameters = [p for p in model.parameters() if p.requires_grad]  # frozen parts: no optimizer state
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings))
        if found is not None:
            training_state.load(self.store, found, model, optimizer, scheduler)
        first = step * settings.grad_accum
        plan = batch_plan(index, train.seed, settings.batch_size, train.bucket_window, workers.rank, workers.world,
                          start=first, per_step=micro_batches(train, settings))
        return Training(objective, optimizer, scheduler, parameters, maker.stream(plan, first, workers.rank,
                                                                                  workers.world))

    def rehearsal_corpus(self, aligned: bool) -> DialogueIndex | None:
        """The corpus the TTS pretraining learned from (`train.tts_from`'s speech and units), whose sentences
        join every batch of a stage that rehearses it; None when it does not."""
        if not self.settings.rehearsal:
            return None
        if not self.train.tts_from:
            raise ValueError(f"train.{self.stage}.rehearsal: there is no TTS pretraining to rehearse; set "
                             f"train.tts_from (or corpus.enabled) or train.{self.stage}.rehearsal=0")
        pretraining = self.store.manifest(self.store.resolve(ArtifactRef.parse(self.train.tts_from)))
        speech, units = (self.store.manifest(pretraining.parents_of(kind)[0]) for kind in (Kind.speech, Kind.units))
        self.log(f"rehearsing {self.settings.rehearsal} sentences of {speech.ref()} per batch")
        return DialogueIndex.build(self.store, speech, units, need_units=True, need_dialogue=False, need_words=aligned)

    def _loop(self, model, tokenizer, state: CheckpointState, found: Manifest | None) -> Manifest | None:
        settings, train, workers = self.settings, self.train, self.workers
        training = self.start_training(model, tokenizer, state.step, found)
        writer = self._tensorboard()
        final = None
        clock = time.perf_counter()
        while state.step < settings.steps:
            metrics = self.train_step(training)
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
                final = self._save(model, tokenizer, state, training.optimizer, training.scheduler)
        if writer is not None:
            writer.close()
        return final

    def train_step(self, training: Training) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches of this worker."""
        objective, optimizer, scheduler = training.objective, training.optimizer, training.scheduler
        settings, workers = self.settings, self.workers
        began, tokens, total = time.perf_counter(), 0, 0.0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,  # FSDP casts by its own policy
                                  enabled=self.train.precision == "bf16" and not is_sharded(objective))
        for _ in range(settings.grad_accum):
            epoch, batch = next(training.batches)
            batch = batch.to(self.device)
            with autocast:
                loss = objective(batch) / settings.grad_accum
            loss.backward()
            total += float(loss.detach())
            tokens += batch.target_tokens(self.stage)
        grad_norm = torch.nn.utils.clip_grad_norm_(training.parameters, settings.max_grad_norm)
        grad_norm = float(grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm)
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
        """A checkpoint version: the whole model once the stage is done (gathered on rank 0), else every
        worker's shards of the training state. Every worker calls it."""
        state.complete = state.step >= self.settings.steps
        workers = self.workers
        writer = None
        if workers.rank == 0:
            writer = checkpoint_writer(self.store, self.train.name, state, [self.speech, self.units, self.start],
                                       self.train.model_dump(mode="json"), self.flow_run_id)
        plain = None
        if state.complete:
            plain = self._plain(model)
        else:
            data_dir = workers.share(writer.data_dir if writer is not None else None)
            written = workers.gather(training_state.save(self.store, data_dir, model, optimizer, scheduler))
        manifest = None
        if writer is not None:
            if not state.complete:
                for entries in written:
                    writer.add_written(entries)
            manifest = publish_checkpoint(writer, plain, tokenizer, state)
            self.log(f"saved {manifest.ref()} (step {state.step}{', complete' if state.complete else ''})")
        workers.barrier()
        return manifest

    def _plain(self, model: OmniModel) -> OmniModel | None:
        """The trained model as one plain OmniModel on rank 0 (adapters merged); None elsewhere. Under
        FSDP every worker takes part in gathering it."""
        lora, sharded = self.settings.lora, is_sharded(model)
        weights = full_state(model) if sharded else None
        if self.workers.rank != 0:
            return None
        if sharded:  # the gathered weights into a plain model of the same shape
            model = load_checkpoint(self.store, self.start)[0]
            if lora is not None:
                add_lora(model, lora)
            model.load_state_dict(weights)
        return merged(model) if lora is not None else model


def loop_payload(config: PipelineConfig, start: Manifest, speech: Manifest, units: Manifest,
                 flow_run_id: str | None) -> dict[str, Any]:
    """What a training worker is sent: the config (secrets included: the worker opens the store) and
    the refs of the starting checkpoint and the data."""
    return {"config": config.model_dump(mode="json", context={"reveal_secrets": True}), "start": str(start.ref()),
            "speech": str(speech.ref()), "units": str(units.ref()), "flow_run_id": flow_run_id}


def read_payload(payload: dict[str, Any]) -> tuple[PipelineConfig, ArtifactStore, Manifest, Manifest, Manifest]:
    """A worker's side of `loop_payload`: the config, its store, the start, speech and units versions."""
    config = PipelineConfig.model_validate(payload["config"])
    store = store_from_config(config.store)
    start, speech, units = (store.manifest(payload[key]) for key in ("start", "speech", "units"))
    return config, store, start, speech, units


def train_stages(payload: dict[str, Any], workers: Workers | None = None) -> list[str]:
    """Run the configured stages in order; returns each stage's final checkpoint ref. This is the
    Ray Train loop (payload: `loop_payload`) and the local one."""
    workers = workers or Workers.from_ray()
    config, store, start, speech, units = read_payload(payload)
    done = []
    with torch_threads(config.train.torch_threads):
        for stage in config.train.stages:
            if not config.train.stage(stage).enabled:
                continue
            start = StageRun(store, config, stage, start, speech, units, workers, payload.get("flow_run_id")).run()
            done.append(str(start.ref()))
    return done
