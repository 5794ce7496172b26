"""Tokenization speed: the tokenize_units flow on Ray vs a bare loop over the same tokenizer,
and the k-means tokenizer's speed against real time on one core.

A demo speech set is built once (real Piper/espeak audio), then replicated into a larger speech
version so that start-up costs do not hide the steady state. The flow runs on a Prefect server and
a Ray runtime that are already up (started as the product starts a local one, its idle workers
holding torch imported, as the bare loop's process does), with a tokenizer that is already fitted. The cases alternate
over rounds and each keeps its best (this machine's speed drifts from minute to minute).

    python benchmarks/units.py                # ~4 minutes on 2 cores (9 h of audio, 2 rounds)
    python benchmarks/units.py --copies 1000  # more audio
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
import pyarrow.compute as pc  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import report, result_row  # noqa: E402
from omniforge.config import load_pipeline_config  # noqa: E402
from storage import store_from_config  # noqa: E402
from storage.audio import decode_audio  # noqa: E402


def replicate_speech(store, copies: int) -> str:
    """speech/big: the demo's assistant rows (what the flow tokenizes) `copies` times over, each
    copy with its own ids, without the native-rate audio that tokenizing never reads."""
    demo = store.manifest("speech/demo")
    table = store.read_table(demo).filter(pc.equal(pc.field("role"), "assistant"))
    native = table.schema.get_field_index("audio_native")
    table = table.set_column(native, table.schema.field(native), pa.nulls(table.num_rows, table.schema.field(native).type))
    writer = store.writer("speech", "big", parents=[demo])
    for copy in range(copies):
        ids = pa.array([f"c{copy}-{u}" for u in table.column("utterance_id").to_pylist()])
        writer.write_table("data", table.set_column(0, "utterance_id", ids))
    return str(writer.publish().ref())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=250, help="times the demo's assistant speech is replicated")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (bare loop, flow 1 worker, flow 2 "
                        "workers); each case keeps its best round")
    args = parser.parse_args()

    from flows.build_dialogues import build_dialogues
    from flows.tokenize_units import tokenize_units
    from tasks.ray_runtime import ray_session
    from tasks.speech_units import (UnitWorker, shard_index, shard_tasks, speech_rows, tokenizer_state,
                                    tokenizer_version)

    root = tempfile.mkdtemp()
    base = [f"store.url={root}/store", "build.source.demo.dialogues=40", "units.kmeans.k=128", "ray.num_cpus=2"]
    build_dialogues(load_pipeline_config("configs/demo.yaml", base))
    store = store_from_config(load_pipeline_config("configs/demo.yaml", base).store)
    big = replicate_speech(store, args.copies)
    config = load_pipeline_config("configs/demo.yaml", base + [f"units.speech={big}"])
    speech, demo = store.manifest(big), store.manifest("speech/demo")
    tokenizer = tokenizer_version(store, demo, config.units, None)  # fitted on the demo, outside the timings

    torch.set_num_threads(1)
    worker = UnitWorker(tokenizer_state(store, tokenizer), store.url, store.options)
    tasks = shard_tasks(shard_index(store, speech, ["assistant"]), set(), config.units.batch_size)
    audio_seconds = float(pc.sum(store.read_table(speech, columns=["duration"]).column("duration")).as_py())
    rows = list(speech_rows(store, demo, ["assistant"]))  # the tokenizer alone, on decoded waves
    waves = [torch.from_numpy(decode_audio(r["audio"]["bytes"])[0]) for r in rows]
    start = time.perf_counter()
    worker.tokenizer.encode(waves)
    encode_only = sum(r["duration"] for r in rows) / (time.perf_counter() - start)
    print(f"{audio_seconds / 3600:.2f} h of audio; tokenizer alone {encode_only:.0f}x real time")

    def bare_loop() -> float:
        """The same work as the flow's workers: read shards, decode, tokenize."""
        start = time.perf_counter()
        for task in tasks:
            worker.run([task])
        return time.perf_counter() - start

    def flow_run(workers: int, round_: int) -> float:
        cfg = load_pipeline_config("configs/demo.yaml", base + [f"units.speech={big}", f"units.workers={workers}",
                                                               f"units.name=run{workers}-{round_}"])
        tokenizer_version(store, demo, cfg.units, None)  # the run's own name: fit outside the timing
        start = time.perf_counter()
        tokenize_units(cfg)
        return time.perf_counter() - start

    rates: dict[str, float] = {}
    with ray_session(config.ray):
        for round_ in range(args.repeats):
            for case, run in (("bare", bare_loop), ("1", lambda: flow_run(1, round_)),
                              ("2", lambda: flow_run(2, round_))):
                seconds = run()
                rates[case] = max(rates.get(case, 0.0), audio_seconds / seconds)
                print(f"round {round_ + 1}, {case:>4}: {audio_seconds / seconds:.0f}x real time ({seconds:.1f} s)",
                      flush=True)
    hours = f"{audio_seconds / 3600:.1f} h of audio"
    report("units", [
        result_row(f"flow 1 worker vs bare loop ({hours})", rates["1"], rates["bare"], "audio-s per wall-s", 0.95),
        result_row(f"flow 2 workers, per worker, vs bare loop ({hours})", rates["2"] / 2, rates["bare"],
                   "audio-s per wall-s", 0.95),
        result_row("k-means tokenizer vs real time (1 core)", encode_only, 1.0, "audio-s per wall-s", 200),
    ])


if __name__ == "__main__":
    main()
