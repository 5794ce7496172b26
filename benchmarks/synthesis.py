"""Synthesis throughput: the build_dialogues flow on Ray vs a bare loop calling the same engine.

Audio-seconds produced per wall-second. The bare loop is one process calling `SynthesisWorker`
(the class the Ray actors run) on every job, with the same one ONNX thread per worker. The flow is
timed from call to return (planning, Ray actors, caching, validation, publishing), on a Prefect
server and a Ray runtime that are already up, the way a scheduled build meets them; each flow run
gets a fresh store, so nothing is cached. Ray's own start-up is timed separately. This machine's
speed drifts by 10-25 % from minute to minute: with --repeats the cases alternate over rounds and
each keeps its best round. Each flow pays a few seconds of fixed cost (Prefect runs, Ray actors
importing and loading their voice), printed below; it weighs more at the default size than at 80
dialogues (the committed rows). One more case, the bare loop saying and hearing each utterance alone
(`SynthesisWorker.one`), measures what the quality gate gains by hearing a batch several utterances
to a Whisper window.

    python benchmarks/synthesis.py                 # ~5 minutes on 2 cores (30 dialogues)
    python benchmarks/synthesis.py --dialogues 80  # the committed rows: ~13 minutes
    python benchmarks/synthesis.py --repeats 3     # best of 3 rounds
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

from benchmarks.common import report, result_row  # noqa: E402
from omniforge.config import load_pipeline_config  # noqa: E402


def config(store: str, dialogues: int, workers: int):
    return load_pipeline_config("configs/demo.yaml", [
        f"store.url={store}", f"build.source.demo.dialogues={dialogues}", f"build.synthesis.workers={workers}",
        "build.synthesis.batch_size=4", "ray.num_cpus=2"])


def bare_loop(dialogues: int, together: bool = True) -> tuple[float, float]:
    """The worker's own loop over the flow's batches (`together` False: each utterance said and heard
    alone, as before the gate heard a batch several utterances to a Whisper window)."""
    from omniforge.tasks.build.steps import load_and_plan
    from omniforge.tasks.build.synthesis import make_worker

    cfg = config(tempfile.mkdtemp(), dialogues, 1)
    jobs = list(load_and_plan(cfg).jobs())
    worker = make_worker(cfg.build)
    worker.run(jobs[:8])  # load the voice model and warm the engine up (a flow's actor gets no such favour)
    size, rows = cfg.build.synthesis.batch_size, []
    start = time.perf_counter()
    for first in range(0, len(jobs), size):
        batch = jobs[first:first + size]
        rows += worker.run(batch) if together else [worker.one(job) for job in batch]
    elapsed = time.perf_counter() - start
    return sum(r["duration"] for r in rows if r["duration"]), elapsed


def flow_run(dialogues: int, workers: int) -> tuple[float, float]:
    """Audio made by one flow run (every utterance in its fresh cache) and the run's wall time."""
    from omniforge.flows.build_dialogues import build_dialogues
    from omniforge.storage import store_from_config
    from omniforge.tasks.build.steps import open_cache

    cfg = config(tempfile.mkdtemp(), dialogues, workers)
    start = time.perf_counter()
    summary = build_dialogues(cfg)
    elapsed = time.perf_counter() - start
    cache = open_cache(store_from_config(cfg.store), cfg)
    made = cache.rows_for(cache.done_keys())
    assert summary["synthesized_this_run"] == len(made) > 0
    return sum(r["duration"] for r in made.values() if r["duration"]), elapsed  # rejects have none


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=30, help="demo dialogues per run")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of (bare loop, bare loop heard alone, "
                        "flow 1 worker, flow 2 workers); each case keeps its best round")
    args = parser.parse_args()

    import ray
    from prefect import flow

    @flow
    def warm_up() -> None:
        """Start Prefect's temporary server before anything is timed."""

    warm_up()
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    rates: dict[str, float] = {}
    audio: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for round_ in range(args.repeats):
        for case, run in (("bare", lambda: bare_loop(args.dialogues)),
                          ("alone", lambda: bare_loop(args.dialogues, False)),
                          ("1", lambda: flow_run(args.dialogues, 1)), ("2", lambda: flow_run(args.dialogues, 2))):
            made, took = run()
            if made / took > rates.get(case, 0.0):
                rates[case], audio[case], seconds[case] = made / took, made, took
            print(f"round {round_ + 1}, {case:>4}: {made:.1f} s of audio in {took:.1f} s", flush=True)
    ray.shutdown()
    print(f"Ray start-up (paid once per process, not per flow here): {ray_start:.1f} s")
    for case in ("1", "2"):
        ideal = audio[case] / (rates["bare"] * int(case))
        print(f"flow, {case} worker(s): {seconds[case] - ideal:.1f} s over {int(case)} x the bare loop's speed")

    report("synthesis", [
        result_row("flow 1 worker vs bare loop", rates["1"], rates["bare"], "audio-s per wall-s", 0.95),
        result_row("flow 2 workers, per worker, vs bare loop", rates["2"] / 2, rates["bare"], "audio-s per wall-s", 0.95),
        result_row("flow 2 workers vs flow 1 worker", rates["2"], rates["1"], "audio-s per wall-s", 1.8),
        result_row("worker: a batch heard together vs each utterance alone", rates["bare"], rates["alone"],
                   "audio-s per wall-s", 1.3),
    ])


if __name__ == "__main__":
    main()
