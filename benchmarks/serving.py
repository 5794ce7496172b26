"""`omniforge serve` under load: loopback WebSocket clients send the demo's spoken questions and
measure, per answer, the first-audio latency (commit sent -> first audio delta received) and the
audio they get back. One conversation at a time, then 8 at once (each asking its questions in turn).
Clients speak as a microphone does: a question's audio goes out in 100 ms pieces at the pace it is
spoken, then the commit (the page, the `openai` SDK's apps and VAD turns all stream so). Last, the
worst case: 8 conversations whose whole questions arrive at the same instant (a burst), so the
server has every question to encode at once before any answer starts.

Rows: aggregate audio throughput with 8 conversations vs 1, questions sent whole (the server never
waits for a user: target 3x, batching should serve many for the price of few); first-audio p50 with 1
vs 8 spoken conversations (target 0.5: at most twice as slow); the same for the burst.

The model has the demo's sizes (freshly initialised, `benchmarks/demo_model.py`) and the demo's
decoder runtime (`serve.decoder`); answers are capped at 12 text tokens and 60 units (2.4 s). Each
is measured twice: speaking with the frame vocoder (`units.decoder.vocoder: frame`, the demo's), then
with the pretrained HiFi-GAN, whose work batching does not share (it is most of a CPU's work).

    python benchmarks/serving.py                # ~3 minutes on 2 cores
    python benchmarks/serving.py --rounds 5
    python benchmarks/serving.py --soak --clients 6 --minutes 3
        # clients that talk, interrupt (response.cancel), drop the connection mid-answer and reconnect;
        # rows: answers not failed (target: all), server RSS growth from the first minute to the end
        # (target < 10%), first-audio p99 (reported)
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from omniforge.offline_env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

import numpy as np  # noqa: E402

from benchmarks.common import report, result_row  # noqa: E402


HIFIGAN = "universal"  # the pretrained HiFi-GAN that `units.decoder.vocoder: universal` names
RATE = 16000  # the clients' audio (the questions' own rate: each session.update says so)
PIECE_SECONDS = 0.1  # what a microphone client sends at a time


def say(ws, wave: np.ndarray, paced: bool) -> float:
    """Send a spoken question and commit it: as a microphone does, 100 ms of audio every 100 ms
    (`paced`), or all at once. Returns when the commit left (first audio counts from there)."""
    piece = round(RATE * PIECE_SECONDS) if paced else len(wave)
    for start in range(0, len(wave), piece):
        chunk = np.clip(wave[start:start + piece], -1, 0.99997)
        ws.send(json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode((chunk * 32768).astype("<i2").tobytes()).decode()}))
        if paced:
            time.sleep(len(chunk) / RATE)
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    return time.perf_counter()


def converse(url: str, questions: list[np.ndarray], results: list[tuple[float, float]], paced: bool) -> None:
    """One conversation: each question in turn; appends (first-audio latency, audio seconds)."""
    from websockets.sync.client import connect

    with connect(url, max_size=None, open_timeout=60) as ws:
        rate = json.loads(ws.recv(timeout=60))["session"]["omniforge"]["model_output_rate"]
        ws.send(json.dumps({"type": "session.update", "session": {"audio": {  # the model's own rates
            "input": {"format": {"type": "audio/pcm", "rate": RATE}},
            "output": {"format": {"type": "audio/pcm", "rate": rate}}}}}))
        json.loads(ws.recv(timeout=60))  # session.updated
        for wave in questions:
            sent = say(ws, wave, paced)
            ws.send(json.dumps({"type": "response.create"}))
            first, samples = None, 0
            while True:
                event = json.loads(ws.recv(timeout=300))
                if event["type"] == "response.output_audio.delta":
                    first = first or time.perf_counter() - sent
                    samples += event["samples"]
                elif event["type"] == "response.done":
                    break
                elif event["type"] == "error":
                    raise RuntimeError(event["error"]["message"])
            results.append((first, samples / rate))


def run(url: str, conversations: int, questions: list[np.ndarray], rounds: int,
        paced: bool = True) -> tuple[float, float, int]:
    """`clients` in a process of its own, as clients are not in the server's process (their threads
    would take turns with the server's for Python's lock)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(clients, (url, conversations, questions, rounds, paced))


def clients(url: str, conversations: int, questions: list[np.ndarray], rounds: int,
            paced: bool) -> tuple[float, float, int]:
    """(audio seconds per wall second, first-audio p50, answers) with `conversations` clients at once."""
    results: list[tuple[float, float]] = []
    threads = [threading.Thread(target=converse, args=(url, [questions[(i + r) % len(questions)] for r in range(rounds)],
                                                      results, paced)) for i in range(conversations)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return sum(a for _, a in results) / wall, float(np.median([f for f, _ in results])), len(results)


def start_server(chain, vocoder, conversations: int):
    """A server in this process speaking with `vocoder` (a HiFi-GAN name or a frame vocoder): its
    URL, and a function that stops it and returns the largest batch it ran."""
    import torch
    import uvicorn

    from omniforge.tasks.evaluate.steps import generation_settings
    from omniforge.tasks.evaluate.streaming_engine import StreamingEngine
    from omniforge.tasks.serve.app import create_app
    from omniforge.tasks.serve.engine import BatchedAnswerer
    from omniforge.tasks.units.decoders.learned import speaking_decoder
    from tests.conftest import free_port

    settings = chain.config.serve.model_copy(update={"max_conversations": conversations})
    generation = generation_settings(settings.model_copy(update={"max_text_tokens": 12, "max_speech_tokens": 60}))
    decoder = speaking_decoder(chain.unit_to_mel, vocoder, settings.decoder)
    engine = StreamingEngine(chain.model, chain.chat, decoder, generation)
    answerer = BatchedAnswerer(engine, generation, settings.torch_threads, torch.Generator().manual_seed(0),
                               settings.admit_window_ms / 1000, settings.prompt_threads)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(answerer, settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    def stop() -> int:
        server.should_exit = True
        answerer.close()
        return answerer.largest_batch

    return f"ws://127.0.0.1:{port}/v1/realtime", stop


def measure(chain, vocoder, args) -> dict[str, tuple[float, float, int] | int]:
    """1 conversation, then many: with clients that speak their questions, then with whole questions
    sent at once (all of the many committing at the same instant)."""
    url, stop = start_server(chain, vocoder, args.conversations)
    run(url, 1, chain.questions, 1)  # warm-up
    n = args.conversations
    cases = {f"{count} {how}": run(url, count, chain.questions, args.rounds * (4 if count == 1 else 1), paced)
             for paced, how in ((True, "spoken"), (False, "sent whole")) for count in (1, n)}
    return {**cases, "largest batch": stop()}


def soak_client(url: str, questions: list[np.ndarray], until: float, seed: int, tally: dict) -> None:
    """One client until `until`: connects, asks, and by turns lets the answer finish, interrupts it
    (response.cancel after its first audio) or drops the connection mid-answer, then reconnects."""
    import random

    from websockets.sync.client import connect

    chance = random.Random(seed)
    while time.perf_counter() < until:
        with connect(url, max_size=None, open_timeout=60) as ws:
            json.loads(ws.recv(timeout=60))  # session.created
            ws.send(json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {
                "type": "audio/pcm", "rate": RATE}}}}}))
            json.loads(ws.recv(timeout=60))
            for _ in range(chance.randint(1, 4)):
                if time.perf_counter() >= until:
                    break
                sent = say(ws, chance.choice(questions), paced=True)
                ws.send(json.dumps({"type": "response.create"}))
                plan = chance.choices(["finish", "interrupt", "drop"], weights=[6, 2, 1])[0]
                first = None
                while True:
                    event = json.loads(ws.recv(timeout=300))
                    if event["type"] == "response.output_audio.delta" and first is None:
                        first = time.perf_counter() - sent
                        tally["first_audio"].append(first)
                        if plan == "interrupt":
                            ws.send(json.dumps({"type": "response.cancel"}))
                        elif plan == "drop":
                            break
                    elif event["type"] == "error":
                        tally["errors"].append(event["error"]["code"])
                    elif event["type"] == "response.done":
                        tally[event["response"]["status"]] += 1
                        break
                if plan == "drop" and first is not None:
                    tally["dropped"] += 1
                    break  # leaves without a word: the socket closes mid-answer


def soak_clients(url: str, questions: list[np.ndarray], clients: int, seconds: float) -> dict:
    from collections import Counter

    tallies = []
    until = time.perf_counter() + seconds
    threads = []
    for i in range(clients):
        tally = Counter()
        tally["first_audio"], tally["errors"] = [], []
        tallies.append(tally)
        threads.append(threading.Thread(target=soak_client, args=(url, questions, until, i, tally)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = {key: sum(t[key] for t in tallies) for key in ("completed", "cancelled", "failed", "dropped")}
    merged["first_audio"] = [f for t in tallies for f in t["first_audio"]]
    merged["errors"] = [e for t in tallies for e in t["errors"]]
    return merged


def soak(chain, args) -> list[dict]:
    """`--clients` clients for `--minutes` against the fast path (the frame vocoder); the server's
    RSS after the first minute and at the end."""
    import multiprocessing

    import psutil

    url, stop = start_server(chain, chain.frame_vocoder, args.clients)
    process = psutil.Process()
    seconds = args.minutes * 60
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(soak_clients, (url, chain.questions, args.clients, seconds))
        time.sleep(min(60, seconds / 2))
        rss_start = process.memory_info().rss
        result = pending.get()
    rss_end = process.memory_info().rss
    stop()
    latencies = np.array(result["first_audio"])
    growth = (rss_end - rss_start) / rss_start * 100
    unprovoked = result["failed"] + len(result["errors"])
    print(f"soak: {args.clients} clients, {args.minutes:g} min: {result['completed']} completed, {result['cancelled']} "
          f"interrupted, {result['dropped']} dropped mid-answer, {result['failed']} failed, errors {result['errors']}; "
          f"first audio p50 {np.median(latencies) * 1000:.0f} ms, p99 {np.percentile(latencies, 99) * 1000:.0f} ms; "
          f"RSS {rss_start / 2**20:.0f} -> {rss_end / 2**20:.0f} MiB")
    return [
        result_row(f"soak: answers not failed ({unprovoked} failed or errors)", result["completed"] + result["cancelled"],
                   result["completed"] + result["cancelled"] + unprovoked, "answers", 1.0),
        result_row("soak: server RSS growth, first minute -> end (target < 10%)", 100 + growth, 110, "% of RSS", 1.0,
                   higher_is_better=False),
        result_row("soak: first audio p99 (baseline p50)", float(np.percentile(latencies, 99)),
                   float(np.median(latencies)), "s", 0.0, higher_is_better=False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="questions each conversation asks")
    parser.add_argument("--conversations", type=int, default=8, help="conversations at once in the loaded case")
    parser.add_argument("--soak", action="store_true", help="instead: clients that talk, interrupt, drop and "
                        "reconnect for --minutes (rows in benchmarks/results/serving_soak.json)")
    parser.add_argument("--clients", type=int, default=6, help="--soak: clients at once")
    parser.add_argument("--minutes", type=float, default=3.0, help="--soak: how long")
    args = parser.parse_args()

    from benchmarks.demo_model import demo_chain

    chain = demo_chain(8)
    if args.soak:
        report("serving_soak", soak(chain, args))
        return
    n = args.conversations
    rows = []
    for label, vocoder in (("frame vocoder", chain.frame_vocoder), ("HiFi-GAN", HIFIGAN)):
        cases = measure(chain, vocoder, args)
        print(f"{label}:")
        for case, (throughput, latency, answers) in list(cases.items())[:4]:
            print(f"  {case}: {answers} answers, {throughput:.2f} audio s per s, first audio p50 {latency * 1000:.0f} ms")
        print(f"  largest batch the model thread ran: {cases['largest batch']}")
        spoken, whole = (cases["1 spoken"], cases[f"{n} spoken"]), (cases["1 sent whole"], cases[f"{n} sent whole"])
        rows += [result_row(f"{label}: audio throughput, {n} conversations vs 1 (questions sent whole)",
                            whole[1][0], whole[0][0], "audio s per s", 3.0),
                 result_row(f"{label}: first-audio latency p50, 1 conversation vs {n} (questions spoken)",
                            spoken[1][1], spoken[0][1], "s", 0.5, higher_is_better=False),
                 result_row(f"{label}: first-audio latency p50, 1 conversation vs {n} committing at one instant",
                            whole[1][1], whole[0][1], "s", 0.5, higher_is_better=False)]
    report("serving", rows)


if __name__ == "__main__":
    main()
