"""Tokenization speed: the tokenize_units flow on Ray vs a bare loop over the same tokenizer,
and the k-means tokenizer's speed against real time on one core.

A demo speech set is built once (real Piper/espeak audio), then replicated into a larger speech
version so that start-up costs do not hide the steady state. The flow runs on a Prefect server and
a Ray runtime that are already up, with a tokenizer that is already fitted.

This machine's speed drifts by 10-25 % from one minute to the next, so every comparison is paired:
- each round runs the bare loop, the flow with 1 and with 2 workers, and the bare loop again; the
  flows are compared with the mean of the round's two bare loops, and the rounds are averaged;
- the steady state (no start-up, no Prefect) compares one Ray actor with this process on the same
  tasks, alternating chunk by chunk.

    python benchmarks/units.py                          # ~4 minutes on 2 cores (7 h of audio, 2 rounds)
    python benchmarks/units.py --copies 800 --repeats 3  # more audio, more rounds
"""

from __future__ import annotations

import argparse
import statistics
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
from omniforge.storage import store_from_config  # noqa: E402
from omniforge.storage.audio import decode_audio  # noqa: E402


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
    parser.add_argument("--copies", type=int, default=200, help="times the demo's assistant speech is replicated")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (bare loop, flow 1 worker, flow 2 "
                        "workers, bare loop), averaged")
    args = parser.parse_args()

    import ray

    from omniforge.flows.build_dialogues import build_dialogues
    from omniforge.flows.tokenize_units import tokenize_units
    from omniforge.tasks.common.ray_runtime import ray_session
    from omniforge.tasks.units.tokenizers import (
        UnitWorker,
        shard_index,
        shard_tasks,
        speech_rows,
        tokenizer_state,
        tokenizer_version,
    )

    root = tempfile.mkdtemp()
    base = [f"store.url={root}/store", "build.source.demo.dialogues=40", "units.kmeans.k=128", "ray.num_cpus=2",
            "units.decoder.steps=1"]  # the flow ends by training a decoder: here only its reuse is timed
    build_dialogues(load_pipeline_config("configs/demo.yaml", base))
    store = store_from_config(load_pipeline_config("configs/demo.yaml", base).store)
    big = replicate_speech(store, args.copies)
    config = load_pipeline_config("configs/demo.yaml", base + [f"units.speech={big}"])
    speech, demo = store.manifest(big), store.manifest("speech/demo")
    tokenizer = tokenizer_version(store, demo, config.units, None)  # fitted on the demo, outside the timings

    torch.set_num_threads(1)
    worker_args = (tokenizer_state(store, tokenizer), store.url, store.options)
    worker = UnitWorker(*worker_args)
    tasks = shard_tasks(shard_index(store, speech, ["assistant"]), set(), config.units.batch_size)
    durations = store.read_table(speech, columns=["utterance_id", "duration"]).to_pydict()
    duration = dict(zip(durations["utterance_id"], durations["duration"]))
    audio_seconds = sum(duration.values())
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
        name = f"run{workers}-{round_}"
        cfg = load_pipeline_config("configs/demo.yaml", base + [f"units.speech={big}", f"units.workers={workers}",
                                                               f"units.name={name}"])
        tokenizer_version(store, demo, cfg.units, None)  # the run's own name: fit outside the timing
        # and its units -> audio decoder (one per tokenizer, which the flow then reuses), trained on the demo's
        # units: the timing is the tokenization's, not the decoder's training
        tokenize_units(load_pipeline_config("configs/demo.yaml", base + [
            "units.speech=speech/demo", f"units.name=warm-{name}", f"units.tokenizer={name}"]))
        start = time.perf_counter()
        tokenize_units(cfg)
        return time.perf_counter() - start

    def actor_vs_bare(chunks: list[list[dict]]) -> tuple[float, float]:
        """Seconds for the same tasks in a warm Ray actor (one call per task, as the flow sends them)
        and in this process, alternating chunk by chunk so that the machine's drift falls on both."""
        actor = ray.remote(num_cpus=1)(UnitWorker).remote(*worker_args)
        ray.get(actor.run.remote(chunks[0][:1]))
        in_actor = here = 0.0
        for chunk in chunks:
            start = time.perf_counter()
            ray.get([actor.run.remote([task]) for task in chunk])
            in_actor += time.perf_counter() - start
            start = time.perf_counter()
            for task in chunk:
                worker.run([task])
            here += time.perf_counter() - start
        ray.kill(actor)
        return in_actor, here

    flows: dict[str, list[float]] = {"1": [], "2": []}  # rates per round
    bares: list[float] = []  # per round, the mean rate of the bare loops run before and after its flows
    with ray_session(config.ray):
        steady = tasks[: len(tasks) // 4]
        in_actor, here = actor_vs_bare([steady[i::8] for i in range(8)])
        steady_seconds = sum(duration[uid] for task in steady for uid in task["ids"])
        for round_ in range(args.repeats):
            before, one, two, after = bare_loop(), flow_run(1, round_), flow_run(2, round_), bare_loop()
            bares.append(audio_seconds / 2 / before + audio_seconds / 2 / after)
            flows["1"].append(audio_seconds / one)
            flows["2"].append(audio_seconds / two)
            print(f"round {round_ + 1}: bare {before:.1f} s, flow 1 worker {one:.1f} s, flow 2 workers {two:.1f} s, "
                  f"bare {after:.1f} s", flush=True)
    print(f"fixed cost per flow run (time over the round's bare loops, 1 worker): "
          f"{', '.join(f'{audio_seconds / f - audio_seconds / b:.1f} s' for f, b in zip(flows['1'], bares))}")
    hours = f"{audio_seconds / 3600:.1f} h of audio"
    bare = statistics.mean(bares)
    report("units", [
        result_row("Ray actor vs bare loop, steady state (same tasks, alternating)", steady_seconds / in_actor,
                   steady_seconds / here, "audio-s per wall-s", 0.95),
        result_row(f"flow 1 worker vs bare loop ({hours})", statistics.mean(flows["1"]), bare, "audio-s per wall-s",
                   0.95),
        result_row(f"flow 2 workers, per worker, vs bare loop ({hours})", statistics.mean(flows["2"]) / 2, bare,
                   "audio-s per wall-s", 0.95),
        result_row("k-means tokenizer vs real time (1 core)", encode_only, 1.0, "audio-s per wall-s", 200),
    ])


if __name__ == "__main__":
    main()
