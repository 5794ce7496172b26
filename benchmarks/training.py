"""Training step time through our data path (Parquet shards -> audio decode -> features -> batch)
vs the same steps on batches already in memory: what the streamed data path costs.

A small demo dataset (real Piper speech, k-means units) is built first. Each stage trains the same
model from the same start for the same batches, once with each data source.

    python benchmarks/training.py                 # ~3 minutes on 2 cores
    python benchmarks/training.py --steps 60 --dialogues 60
"""

from __future__ import annotations

import argparse
import copy
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

    def __init__(self, run, model, batches) -> None:
        from omniforge.model.stage_objectives import StageObjective

        self.run, self.batches = run, batches
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=run.settings.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.objective = StageObjective(model, run.stage)
        self.block(1)  # warm-up

    def block(self, steps: int) -> float:
        """Seconds per step over `steps` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.run.train_step(self.objective, self.optimizer, self.scheduler, self.parameters, self.batches)
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=30, help="demo dialogues to build")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per stage and data source")
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
            "ray.num_cpus=2", f"train.log_dir={root}/tb"]
    config = load_pipeline_config("configs/demo.yaml", base)
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
        runs = {}
        for name, source in (("in-memory", iter(in_memory)), ("ours", ours.stream(plan(), 0, 0, 1))):
            model = copy.deepcopy(fresh)
            set_trainable(model, train.trainable(stage))
            model.train()
            model.speech_encoder.eval()
            runs[name] = TimedRun(run, model, source)
        blocks = {name: [] for name in runs}
        for _ in range(ROUNDS):  # alternate blocks: drift of the machine hits both sources alike
            for name, timed in runs.items():
                blocks[name].append(timed.block(args.steps // ROUNDS))
        seconds = {name: statistics.median(values) for name, values in blocks.items()}
        print(f"{stage}: " + ", ".join(f"{n} {v * 1000:.0f} ms/step" for n, v in seconds.items()))
        rows.append(result_row(f"{stage} step, batch {settings.batch_size}, data path vs in-memory",
                               seconds["ours"], seconds["in-memory"], "s/step", 0.95, higher_is_better=False))
    report("training", rows)


if __name__ == "__main__":
    main()
