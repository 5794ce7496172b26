"""The build's planning at scale: records/s and peak driver memory as the source grows.

Each size runs in a fresh process: it writes a JSONL source of N dialogues of 1-5 user turns (plain
sentences; a share of the answers holds a number, money or a date, which NeMo's grammars spell out),
then times `load_and_plan` (read, parse, make speakable, give voices, key every utterance: the build's
work before any audio) and records the process's peak RSS. A slice of the planned utterances is then
synthesized with espeak-ng by the synthesis worker (level checks and the quality gate included).

Rows: records/s at each size against the smallest (target: within 0.8x), peak RSS against the
smallest (ratio = smallest / ours; target: at most 1.5x, i.e. ratio >= 0.667), the slice's
utterances/s (baseline: the smallest size's), and the largest size planned on `--plan-workers` Ray
actors against the driver alone (target: 0.8 x the workers).

    python benchmarks/scale.py                               # 300 and 1,000 dialogues, ~4 min on 2 cores
    python benchmarks/scale.py --sizes 1000,10000,100000 --alone-size 10000   # the issue's sizes (~45 min)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from omniforge.offline_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from benchmarks.common import report, result_row  # noqa: E402

WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city name").split()
VERBS = "is has makes takes gives finds tells asks needs feels becomes leaves puts means keeps lets".split()
NUMBERED = ["It costs ${n}.", "It happened in {year}.", "About {n} people came.", "It is {n} km away.",
            "The meeting is on Jan. {day}, {year}."]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
    return f"The {words[0]} {rng.choice(VERBS)} the {' '.join(words[1:])}."


def write_source(path: Path, dialogues: int, numbered_share: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(dialogues):
            messages = []
            for _ in range(rng.randint(1, 5)):
                messages.append({"role": "user", "content": sentence(rng)[:-1] + "?"})
                answer = " ".join(sentence(rng) for _ in range(rng.randint(1, 3)))
                if rng.random() < numbered_share:
                    answer += " " + rng.choice(NUMBERED).format(n=rng.randint(2, 9999), year=rng.randint(1900, 2030),
                                                               day=rng.randint(1, 28))
                messages.append({"role": "assistant", "content": answer})
            out.write(json.dumps({"id": f"d{i:06d}", "messages": messages}) + "\n")


def measure(dialogues: int, numbered_share: float, slice_size: int, plan_workers: int) -> dict:
    """In this process: plan `dialogues` dialogues (on `plan_workers` Ray actors when > 1, Ray's start
    included), then synthesize a slice with espeak-ng."""
    from omniforge.config import load_pipeline_config
    from omniforge.tasks.build.steps import load_and_plan
    from omniforge.tasks.build.synthesis import make_worker

    folder = Path(tempfile.mkdtemp())
    source = folder / "dialogues.jsonl"
    write_source(source, dialogues, numbered_share)
    config = load_pipeline_config("configs/demo.yaml", [
        f"store.url={folder / 'store'}", "build.source.kind=jsonl", f"build.source.path={source}",
        "build.tts.assistant.backend=espeak", "build.tts.assistant.voice=en-us", "build.tts.users.espeak_share=1",
        f"build.planning.workers={plan_workers}", "ray.num_cpus=2"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    plan = load_and_plan(config)
    planning = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = make_worker(config.build)
    jobs = list(islice(plan.jobs(), slice_size))
    worker.run(jobs[:2])  # models loaded and warm
    start = time.perf_counter()
    worker.run(jobs)
    synthesis = time.perf_counter() - start
    return {"dialogues": dialogues, "utterances": plan.utterance_count, "records_per_s": dialogues / planning,
            "rss_mib_before": before, "rss_mib_peak": peak, "slice_utterances_per_s": len(jobs) / synthesis}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300,1000", help="Comma-separated dialogue counts.")
    parser.add_argument("--numbered-share", type=float, default=0.2, help="Share of answers with a number.")
    parser.add_argument("--slice", type=int, default=16, help="Utterances synthesized at each size.")
    parser.add_argument("--plan-workers", type=int, default=2, help="build.planning.workers of every size.")
    parser.add_argument("--alone-size", type=int, help="Dialogues of the workers-vs-driver row (default: the "
                        "largest size; the driver alone takes twice as long).")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.numbered_share, args.slice, args.plan_workers)))
        return

    def run(size: int, workers: int) -> dict:
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--numbered-share",
                               str(args.numbered_share), "--slice", str(args.slice), "--plan-workers", str(workers)],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print({"plan_workers": workers, **result}, flush=True)
        return result

    results = [run(int(size), args.plan_workers) for size in args.sizes.split(",")]
    smallest, largest = results[0], results[-1]
    compared = next(r for r in results if r["dialogues"] == (args.alone_size or largest["dialogues"]))
    alone = run(compared["dialogues"], 1)
    rows = []
    for r in results[1:]:
        n = f"{r['dialogues']:,} vs {smallest['dialogues']:,} dialogues"
        rows.append(result_row(f"planning records/s, {n}", r["records_per_s"], smallest["records_per_s"],
                               "records/s", 0.8))
        rows.append(result_row(f"peak driver RSS, {n}", r["rss_mib_peak"], smallest["rss_mib_peak"], "MiB",
                               round(1 / 1.5, 3), higher_is_better=False))
        rows.append(result_row(f"espeak-ng slice utterances/s, {n}", r["slice_utterances_per_s"],
                               smallest["slice_utterances_per_s"], "utterances/s", 0.8))
    rows.append(result_row(f"planning records/s, {compared['dialogues']:,} dialogues: {args.plan_workers} Ray workers "
                           "vs the driver alone", compared["records_per_s"], alone["records_per_s"], "records/s",
                           round(0.8 * args.plan_workers, 2)))
    report("scale", rows)


if __name__ == "__main__":
    main()
