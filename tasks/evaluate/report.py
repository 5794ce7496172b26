"""The evaluation report: metrics JSON, per-answer rows, Markdown and HTML with plots (latency
histogram, the event timeline of one answer, the metric table) and the answers' wavs, published
as an `eval` version with lineage to the checkpoint, the eval set and the audio decoder."""

from __future__ import annotations

import base64
import html
import io
import json
import re

import pyarrow as pa
from matplotlib.figure import Figure  # figures without pyplot: no process-wide backend is set

from omniforge.hashing import stable_hash
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import encode_audio
from omniforge.storage.schemas import ANSWERS_SCHEMA
from omniforge.tasks.evaluate.metrics import TurnResult
from omniforge.tasks.evaluate.streaming_engine import AnswerTrace

METRIC_NAMES = {
    "s2t_accuracy": "S2T accuracy", "s2s_accuracy": "S2S accuracy", "asr_wer": "ASR-WER (text vs speech)",
    "dnsmos": "DNSMOS (overall)", "dnsmos_answers": "answers scored by DNSMOS", "latency_p50": "latency p50 (s)", "latency_p90": "latency p90 (s)",
    "latency_max": "latency max (s)", "real_time_factor": "real-time factor",
    "audio_before_text_end": "share of answers whose audio starts before their text ends", "answers": "answers",
    "sentences": "plain sentences said (evaluate.sentences)", "sentence_asr_wer": "sentences: ASR-WER",
    "sentence_key_word_heard": "sentences: key word heard",
    "sentence_length_guard": "sentences: ended by the length guard",
}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def latency_histogram(results: list[TurnResult]) -> bytes:
    figure = Figure(figsize=(6, 3))
    axes = figure.subplots()
    axes.hist([r.latency * 1000 for r in results if r.latency is not None], bins=20, color="#4477aa")
    axes.set_xlabel("first-audio latency (ms)")
    axes.set_ylabel("answers")
    return _png(figure)


def timeline(trace: AnswerTrace) -> bytes:
    """When each text token, unit chunk and audio chunk of one answer came out."""
    figure = Figure(figsize=(7, 2.5))
    axes = figure.subplots()
    lanes = {"text": 2, "units": 1, "audio": 0}
    for kind, lane in lanes.items():
        times = [e.seconds * 1000 for e in trace.events if e.kind == kind]
        axes.scatter(times, [lane] * len(times), marker="|", s=200, label=kind)
    axes.set_yticks(list(lanes.values()), list(lanes))
    axes.set_xlabel("ms after the end of the user's speech")
    return _png(figure)


def metric_rows(metrics: dict, not_computed: dict) -> list[tuple[str, str]]:
    rows = []
    for key, label in METRIC_NAMES.items():
        if key not in metrics:  # a part of the evaluation that was not asked for (no sentence set)
            continue
        value = metrics[key]
        rows.append((label, f"not computed: {not_computed[key]}" if value is None else f"{value:.4g}"))
    return rows


def markdown(title: str, summary: dict, checkpoint: str, eval_set: str) -> str:
    lines = [f"# {title}", "", f"checkpoint `{checkpoint}`, eval set `{eval_set}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in metric_rows(summary["metrics"], summary["not_computed"])]
    rejected = summary.get("rejected_items", [])
    if rejected:
        lines += ["", f"{len(rejected)} items of the eval set were left out:", "", "| item | field | reason | detail |",
                  "|---|---|---|---|"]
        lines += [f"| {r['record']} | {r['field']} | {r['reason']} | {r['detail']} |" for r in rejected]
    return "\n".join(lines) + "\n"


def file_name_for(identifier: str) -> str:
    """A file name for an item or sentence id, whatever it holds ("../x", "a/b", 1,000 characters):
    its safe characters, and a hash of it when some had to go, so two ids never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", identifier).strip("._")[:80]
    return safe if safe and safe == identifier else f"{safe or 'item'}-{stable_hash(identifier)[:8]}"


def wav_name(result: TurnResult) -> str:
    return f"{file_name_for(result.item_id)}-{result.turn}"


def audio_player(wav: bytes | None) -> str:
    """An <audio> element playing the answer from the page itself (the report is one file)."""
    if wav is None:
        return ""
    return f"<audio controls preload='none' src='data:audio/wav;base64,{base64.b64encode(wav).decode()}'></audio>"


def html_report(title: str, summary: dict, results: list[TurnResult], plots: dict[str, bytes],
                wavs: dict[str, bytes]) -> str:
    """wavs: the kept answers' audio by `wav_name`; each plays next to its text and transcript."""
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>"
                   for a, b in metric_rows(summary["metrics"], summary["not_computed"]))
    images = "".join(f"<h2>{html.escape(name)}</h2><img src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
                     for name, data in plots.items())
    answers = "".join(
        f"<tr><td>{html.escape(r.item_id)}/{r.turn}</td><td>{html.escape(r.question)}</td>"
        f"<td>{html.escape(r.text)}</td><td>{audio_player(wavs.get(wav_name(r)))}</td>"
        f"<td>{html.escape(r.transcript or '')}</td><td>{html.escape(', '.join(r.references))}</td>"
        f"<td>{r.s2t_correct}</td><td>{r.s2s_correct}</td>"
        f"<td>{'' if r.latency is None else round(r.latency * 1000)}</td></tr>" for r in results)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><table border='1'>{rows}</table>{images}"
            "<h2>answers</h2><table border='1'><tr><th>item</th><th>question</th><th>text answer</th>"
            "<th>speech answer</th><th>ASR of speech answer</th><th>reference</th><th>S2T</th><th>S2S</th>"
            f"<th>latency ms</th></tr>{answers}</table>"
            "</body></html>")


def publish_eval(store: ArtifactStore, name: str, summary: dict, results: list[TurnResult],
                 traces: list[tuple[TurnResult, AnswerTrace]], parents: list[Manifest], config: dict, config_hash: str,
                 flow_run_id: str | None) -> Manifest:
    """traces: the answers whose audio is kept (saved as wavs and played in the HTML report)."""
    writer = store.writer(Kind.eval, name, parents=parents, config=config, config_hash=config_hash,
                          flow_run_id=flow_run_id)
    [checkpoint] = [p.ref() for p in parents if p.kind == Kind.checkpoint]
    title = f"evaluation of {checkpoint}"
    eval_set = config.get("eval_set", "")
    plots = {"latency histogram": latency_histogram(results)}
    if traces:
        plots["timeline of one answer"] = timeline(max((t for _, t in traces), key=lambda t: t.audio_seconds))
    writer.add_file("metrics.json", json.dumps(summary, indent=2).encode())
    writer.write_table("answers", pa.Table.from_pylist([r.row() for r in results], schema=ANSWERS_SCHEMA))
    writer.add_file("report.md", markdown(title, summary, str(checkpoint), eval_set).encode())
    wavs = {wav_name(result): encode_audio(trace.audio, trace.sample_rate, "WAV")
            for result, trace in traces if trace.audio_seconds}
    writer.add_file("report.html", html_report(title, summary, results, plots, wavs).encode())
    for label, data in plots.items():
        writer.add_file(f"plots/{label.replace(' ', '_')}.png", data)
    for name_of_wav, wav in wavs.items():
        writer.add_file(f"wavs/{name_of_wav}.wav", wav)
    writer.stats.update(summary["metrics"])
    return writer.publish()


def compare(store: ArtifactStore, first: Manifest, second: Manifest) -> str:
    """Two eval versions side by side (Markdown)."""
    a, b = (json.loads(store.read_bytes(m.files["metrics.json"].path))["metrics"] for m in (first, second))
    lines = [f"| metric | {first.ref()} | {second.ref()} | change |", "|---|---|---|---|"]
    for key, label in METRIC_NAMES.items():
        x, y = a.get(key), b.get(key)
        change = f"{y - x:+.4g}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) else ""
        lines.append(f"| {label} | {x} | {y} | {change} |")
    checkpoints = [", ".join(str(r) for r in m.parents_of(Kind.checkpoint)) for m in (first, second)]
    lines.append(f"| checkpoint | {checkpoints[0]} | {checkpoints[1]} | |")
    return "\n".join(lines) + "\n"
