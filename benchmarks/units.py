"""Tokenization speed: the tokenize_units flow on Ray vs a bare loop over the same tokenizer,
and the k-means tokenizer's speed against real time on one core.

A demo speech set is built once (real Piper/espeak audio), then replicated into a larger speech
version so that start-up costs do not hide the steady state. The flow runs on a Prefect server and
a Ray runtime that are already up, with a tokenizer that is already fitted.

    python benchmarks/units.py                # ~3 minutes on 2 cores
    python benchmarks/units.py --copies 200   # more audio
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from omniforge.offline_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import report, result_row  # noqa: E402
from omniforge.config import load_pipeline_config  # noqa: E402
from storage import store_from_config  # noqa: E402
from storage.audio import decode_audio  # noqa: E402


def replicate_speech(store, copies: int) -> str:
    """speech/big: the demo's rows `copies` times over, each copy with its own ids."""
    demo = store.manifest("speech/demo")
    table = store.read_table(demo)
    writer = store.writer("speech", "big", parents=[demo])
    for copy in range(copies):
        ids = pa.array([f"c{copy}-{u}" for u in table.column("utterance_id").to_pylist()])
        writer.write_table("data", table.set_column(0, "utterance_id", ids))
    return str(writer.publish().ref())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=40, help="times the demo speech is replicated")
    args = parser.parse_args()

    import ray

    from flows.build_dialogues import build_dialogues
    from flows.tokenize_units import tokenize_units
    from tasks.speech_units import (UnitWorker, shard_index, shard_tasks, speech_rows, tokenizer_state,
                                    tokenizer_version)

    root = tempfile.mkdtemp()
    base = [f"store.url={root}/store", "build.source.demo.dialogues=40", "units.kmeans.k=128", "ray.num_cpus=2"]
    build_dialogues(load_pipeline_config("configs/demo.yaml", base))
    store = store_from_config(load_pipeline_config("configs/demo.yaml", base).store)
    big = replicate_speech(store, args.copies)
    config = load_pipeline_config("configs/demo.yaml", base + [f"units.speech={big}"])
    speech = store.manifest(big)
    tokenizer = tokenizer_version(store, speech, config.units, None)  # fitted once, outside the timings

    torch.set_num_threads(1)
    worker = UnitWorker(tokenizer_state(store, tokenizer), store.url, store.options)
    tasks = shard_tasks(shard_index(store, speech, ["assistant"]), set(), config.units.batch_size)
    start = time.perf_counter()  # the same work as the flow's workers: read shards, decode, tokenize
    for task in tasks:
        worker.run([task])
    bare_seconds = time.perf_counter() - start
    rows = list(speech_rows(store, speech, ["assistant"]))
    audio_seconds = sum(r["duration"] for r in rows)
    bare = audio_seconds / bare_seconds
    waves = [torch.from_numpy(decode_audio(r["audio"]["bytes"])[0]) for r in rows]
    start = time.perf_counter()
    worker.tokenizer.encode(waves)
    encode_only = audio_seconds / (time.perf_counter() - start)
    print(f"{len(rows)} utterances, {audio_seconds / 60:.1f} min of audio; bare loop {bare:.0f}x real time "
          f"(decode + tokenize), tokenizer alone {encode_only:.0f}x")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rates = {}
    for workers in (1, 2):
        cfg = load_pipeline_config("configs/demo.yaml", base + [f"units.speech={big}", f"units.name=run{workers}",
                                                               f"units.workers={workers}"])
        tokenizer_version(store, speech, cfg.units, None)  # the run's own name: fit outside the timing
        start = time.perf_counter()
        tokenize_units(cfg)
        rates[workers] = audio_seconds / (time.perf_counter() - start)
        print(f"flow, {workers} worker(s): {rates[workers]:.0f}x real time")
    ray.shutdown()
    report("units", [
        result_row("flow 1 worker vs bare loop", rates[1], bare, "audio-s per wall-s", 0.95),
        result_row("flow 2 workers, per worker, vs bare loop", rates[2] / 2, bare, "audio-s per wall-s", 0.95),
        result_row("k-means tokenizer vs real time (1 core)", encode_only, 1.0, "audio-s per wall-s", 200),
    ])


if __name__ == "__main__":
    main()
