"""Training: what the streamed data path costs, and what sharding saves.

1. Step time through our data path (Parquet shards -> audio decode -> features -> batch) vs the same
   steps on batches already in memory. Each stage trains the same model from the same start for the
   same batches, once with each data source. The tts stage also runs on `--threads` torch threads
   against `train.torch_threads` (the TTS pretraining has both cores to itself once the decoder exists).
2. Two Ray Train workers (gloo on CPU) training stage s2t of a model with a larger LLM, activation
   checkpointing on (as the 7B config trains): the peak memory a worker adds, FSDP vs DDP, and the
   step time of 2 workers vs 1 on the same global batch (2 micro-batches a step: 2 workers x 1, or
   1 worker x 2).

A small demo dataset (real Piper speech, k-means units) is built first.

    python benchmarks/training.py                 # ~5 minutes on 2 cores
    python benchmarks/training.py --steps 60 --dialogues 60 --hidden 1536 --layers 16
    python benchmarks/training.py --set train.model.tts.hidden_size=256 --set train.model.tts.num_hidden_layers=4
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from omniforge.offline_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

import torch  # noqa: E402

from benchmarks.common import report, result_row  # noqa: E402
from omniforge.config import load_pipeline_config  # noqa: E402
from omniforge.storage import store_from_config  # noqa: E402

ROUNDS = 4


class TimedRun:
    """One model training through `run.train_step` from one batch source; timed in blocks."""

    def __init__(self, run, model, batches, threads: int) -> None:
        from omniforge.model.stage_objectives import StageObjective
        from omniforge.tasks.train.loop import Training

        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=run.settings.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        self.run, self.threads = run, threads
        self.training = Training(StageObjective(model, run.stage, run.train.loss_chunk_tokens), optimizer, scheduler,
                                 parameters, batches)
        self.block(1)  # warm-up

    def block(self, steps: int) -> float:
        """Seconds per step over `steps` steps."""
        from omniforge.tasks.common.threads import torch_threads

        with torch_threads(self.threads):
            start = time.perf_counter()
            for _ in range(steps):
                self.run.train_step(self.training)
            return (time.perf_counter() - start) / steps


def worker_steps(payload: dict) -> None:
    """Ray Train loop: `steps` s2t steps on this worker, as the training loop takes them; writes the
    median seconds per step (after the first) and the most memory any worker added to `out`."""
    import resource

    import psutil

    from omniforge.tasks.common.threads import torch_threads
    from omniforge.tasks.train.loop import StageRun, Workers, read_payload

    import peft  # noqa: F401 - loaded before the baseline: it is code, not training memory
    import transformers  # noqa: F401

    before = psutil.Process().memory_info().rss
    workers = Workers.from_ray()
    config, store, start, speech, units = read_payload(payload)
    run = StageRun(store, config, "s2t", start, speech, units, workers, None)
    seconds = []
    with torch_threads(config.train.torch_threads):
        model, tokenizer = run.model_to_train()
        training = run.start_training(model, tokenizer, 0, None)
        for _ in range(payload["steps"]):
            began = time.perf_counter()
            run.train_step(training)
            seconds.append(time.perf_counter() - began)
    added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # ru_maxrss: KiB on Linux
    most = max(workers.gather(added))
    if workers.rank == 0:  # Ray Train keeps only metrics reported with a checkpoint: a file says it
        Path(payload["out"]).write_text(json.dumps({"seconds_per_step": statistics.median(seconds[1:]),
                                                    "peak_mib": most / 2**20}))


def sharding_rows(config, store, speech, units, args) -> list[dict]:
    """FSDP vs DDP memory on 2 workers, and 2 workers vs 1 on the same global batch."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from omniforge.config import load_pipeline_config
    from omniforge.tasks.common.ray_runtime import ray_session
    from omniforge.tasks.train import steps as train_steps
    from omniforge.tasks.train.checkpoints import load_checkpoint
    from omniforge.tasks.train.loop import loop_payload

    llm = (f"train.model.llm={{hidden_size: {args.hidden}, num_hidden_layers: {args.layers}, num_attention_heads: "
           f"{args.hidden // 64}, num_key_value_heads: {args.hidden // 256}, intermediate_size: {args.hidden * 8 // 3}}}")
    base = [f"store.url={config.store.url}", "ray.num_cpus=2", f"train.log_dir={config.train.log_dir}",
            "train.name=sharding", llm, "train.s2t.batch_size=2", "train.activation_checkpointing=true"]
    start = train_steps.initial_checkpoint(store, load_pipeline_config("configs/demo.yaml", base), speech, units, None)
    llm_params = sum(p.numel() for p in load_checkpoint(store, start)[0].llm.parameters())
    measured = {}
    for name, workers, strategy in (("fsdp-2", 2, "fsdp"), ("ddp-2", 2, "ddp"), ("one", 1, "ddp")):
        run_config = load_pipeline_config("configs/demo.yaml", base + [
            f"train.workers={workers}", f"train.strategy={strategy}", f"train.s2t.grad_accum={2 // workers}"])
        with ray_session(run_config.ray), tempfile.TemporaryDirectory() as folder:
            payload = {**loop_payload(run_config, start, speech, units, None), "steps": args.sharded_steps,
                       "out": f"{folder}/measured.json"}
            TorchTrainer(worker_steps, train_loop_config=payload, scaling_config=ScalingConfig(num_workers=workers),
                         run_config=RunConfig(name=f"bench-{name}", storage_path=folder)).fit()
            measured[name] = json.loads(Path(payload["out"]).read_text())
        print(f"{name}: {measured[name]['seconds_per_step'] * 1000:.0f} ms/step, "
              f"{measured[name]['peak_mib']:.0f} MiB added per worker")
    model = f"LLM {args.hidden}x{args.layers} ({llm_params / 1e6:.0f}M parameters)"
    return [
        result_row(f"s2t, {model}: memory a worker adds, FSDP vs DDP on 2 workers", measured["fsdp-2"]["peak_mib"],
                   measured["ddp-2"]["peak_mib"], "MiB", round(1 / 0.6, 3), higher_is_better=False),
        *(result_row(f"s2t step, {model}: {strategy.upper()} 2 workers x 1 micro-batch vs 1 worker x 2",
                     measured[f"{strategy}-2"]["seconds_per_step"], measured["one"]["seconds_per_step"], "s/step",
                     1.0, higher_is_better=False) for strategy in ("fsdp", "ddp"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=20, help="demo dialogues to build")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per stage and data source")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size of the sharded runs' LLM")
    parser.add_argument("--layers", type=int, default=12, help="layers of the sharded runs' LLM")
    parser.add_argument("--sharded-steps", type=int, default=4, help="steps per sharded run (the first not timed)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the tts stage's other run")
    parser.add_argument("--set", action="append", default=[], help="more config overrides (section.field=value)")
    args = parser.parse_args()

    from omniforge.flows.build_dialogues import build_dialogues
    from omniforge.flows.tokenize_units import tokenize_units
    from omniforge.model.stage_objectives import set_trainable
    from omniforge.tasks.train import steps as train_steps
    from omniforge.tasks.train.checkpoints import load_checkpoint
    from omniforge.tasks.train.data import BatchMaker, DialogueIndex, batch_plan
    from omniforge.tasks.train.loop import StageRun, Workers
    from omniforge.tasks.train.text_tokenizer import ChatFormat

    root = tempfile.mkdtemp()
    base = [f"store.url={root}/store", f"build.source.demo.dialogues={args.dialogues}", "units.kmeans.k=64",
            "units.decoder.steps=5", "units.decoder.frame.steps=5", "ray.num_cpus=2",
            f"train.log_dir={root}/tb"]  # training never reads the decoder
    config = load_pipeline_config("configs/demo.yaml", base + args.set)
    build_dialogues(config)
    tokenize_units(config)
    store = store_from_config(config.store)
    speech, units = train_steps.resolve_inputs(store, config)
    start = train_steps.initial_checkpoint(store, config, speech, units, None)
    torch.set_num_threads(config.train.torch_threads)
    fresh, tokenizer = load_checkpoint(store, start)
    chat = ChatFormat(tokenizer, config.train.model.tokenizer.system_prompt)
    rows = []
    for stage in ("s2t", "tts", "s2s"):
        run = StageRun(store, config, stage, start, speech, units, Workers(), None)
        settings, train = run.settings, config.train
        index = DialogueIndex.build(store, speech, units, need_units=stage != "s2t")
        maker = BatchMaker(store, index, chat, fresh.config.encoder_config.num_mel_bins, train.augment, train.seed,
                           with_speech=stage != "tts")

        def plan():
            return batch_plan(index, train.seed, settings.batch_size, train.bucket_window, 0, 1)

        in_memory = [item for _, item in zip(range(args.steps + 2), maker.stream(plan(), 0, 0, 1))]
        ours = BatchMaker(store, index, chat, fresh.config.encoder_config.num_mel_bins, train.augment, train.seed,
                          with_speech=stage != "tts")
        threads = train.torch_threads
        sources = {"in-memory": (iter(in_memory), threads), "ours": (ours.stream(plan(), 0, 0, 1), threads)}
        if stage == "tts":
            sources["threads"] = (iter(in_memory), args.threads)
        runs = {}
        for name, (source, count) in sources.items():
            model = copy.deepcopy(fresh)
            set_trainable(model, train.trainable(stage))
            model.train()
            model.speech_encoder.eval()
            runs[name] = TimedRun(run, model, source, count)
        blocks = {name: [] for name in runs}
        for _ in range(ROUNDS):  # alternate blocks: drift of the machine hits both sources alike
            for name, timed in runs.items():
                blocks[name].append(timed.block(args.steps // ROUNDS))
        seconds = {name: statistics.median(values) for name, values in blocks.items()}
        print(f"{stage}: " + ", ".join(f"{n} {v * 1000:.0f} ms/step" for n, v in seconds.items()))
        rows.append(result_row(f"{stage} step, batch {settings.batch_size}, data path vs in-memory",
                               seconds["ours"], seconds["in-memory"], "s/step", 0.95, higher_is_better=False))
        if "threads" in seconds:
            tts = config.train.model.tts
            rows.append(result_row(f"{stage} step, batch {settings.batch_size}, TTS LM {tts.hidden_size}x"
                                   f"{tts.num_hidden_layers}: {args.threads} torch threads vs {train.torch_threads}",
                                   seconds["threads"], seconds["in-memory"], "s/step", 1.3, higher_is_better=False))
    rows += sharding_rows(config, store, speech, units, args)
    report("training", rows)


if __name__ == "__main__":
    main()
