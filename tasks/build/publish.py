"""Turn a synthesized plan into two versions: `dialogues/NAME` (text) and `speech/NAME` (audio).

A dialogue enters the dataset only if every one of its turns has audio; otherwise it goes to the
rejects table with the turn and the reason (or, `gate.on_reject: cut`, keeps the turns before it).
The quality gate's figures of each utterance go into the speech version's `quality` table, and their
spread into its stats. When the last speech version is a subset of the new
one, its shards are referenced rather than copied, and only the new rows are written. When nothing
changed, no new version is made.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import audio_cell
from omniforge.storage.schemas import DIALOGUE_SCHEMA, QUALITY_SCHEMA, REJECT_SCHEMA, speech_schema
from omniforge.tasks.common.records import Reject
from omniforge.tasks.common.incremental import unchanged_rows
from omniforge.tasks.build.gate import FIGURES as GATE_FIGURES
from omniforge.tasks.build.gate import REASONS as GATE_REASONS
from omniforge.tasks.build.plan import Plan, Utterance

HISTOGRAM_BINS = 10

@dataclass
class BuildResult:
    dialogues: Manifest
    speech: Manifest
    summary: dict = field(default_factory=dict)
    published: bool = True


def kept_utterances(plan: Plan, results: dict[str, dict], on_reject: str = "drop") -> tuple[list[Utterance], list[Reject]]:
    """Utterances of dialogues whose every turn succeeded, and a reject per failed dialogue; with
    `on_reject` "cut", a failed dialogue keeps its turns before the failed one when they end with an
    answer."""
    by_dialogue: dict[str, list[Utterance]] = {}
    for utterance in plan.utterances:
        by_dialogue.setdefault(utterance.dialogue_id, []).append(utterance)
    kept, rejects = [], []
    for dialogue_id, utterances in by_dialogue.items():
        failed = next((u for u in utterances if results.get(u.key, {}).get("audio") is None), None)
        if failed is None:
            kept.extend(utterances)
            continue
        row = results.get(failed.key, {})
        before = utterances[: utterances.index(failed)] if on_reject == "cut" else []
        while before and before[-1].role != "assistant":
            before.pop()
        kept.extend(before)
        detail = row.get("error") or ""
        if before:
            detail += f" (the dialogue keeps its first {len(before)} turns)"
        rejects.append(Reject(dialogue_id, f"turns[{failed.turn_index}].audio",
                              row.get("error_reason") or "not_synthesized", detail))
    return kept, rejects


def quality_rows(kept: list[Utterance], results: dict[str, dict]) -> pa.Table:
    """The gate's figures of every kept utterance."""
    names = [name for name in QUALITY_SCHEMA.names if name not in ("utterance_id", "key")]
    return pa.Table.from_pylist([{"utterance_id": u.utterance_id, "key": u.key,
                                  **{n: results[u.key].get(n) for n in names}} for u in kept], schema=QUALITY_SCHEMA)


def gate_summary(quality: pa.Table, rejects: list[Reject]) -> dict:
    """How the gate went: utterances said more than once, rejects by reason, each figure's spread."""
    attempts = [a for a in quality.column("attempts").to_pylist() if a is not None]
    figures = {}
    for name in GATE_FIGURES:
        values = [v for v in quality.column(name).to_pylist() if v is not None]
        if values:
            figures[name] = histogram(values)
    return {"resynthesized": sum(a > 1 for a in attempts), "extra_tries": sum(a - 1 for a in attempts),
            "rejected": dict(Counter(r.reason for r in rejects if r.reason in GATE_REASONS)), "figures": figures}


def histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> dict:
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    return {"n": len(values), "median": round(float(np.median(values)), 4), "min": round(float(min(values)), 4),
            "max": round(float(max(values)), 4), "edges": [round(float(e), 4) for e in edges],
            "counts": counts.tolist()}


def speech_row(utterance: Utterance, result: dict) -> dict:
    return {
        "utterance_id": utterance.utterance_id, "dialogue_id": utterance.dialogue_id,
        "turn_index": utterance.turn_index, "role": utterance.role, "speaker": utterance.speaker,
        "text": utterance.text, "audio": audio_cell(result["audio"], f"{utterance.utterance_id}.flac"),
        "sampling_rate": INPUT_SAMPLE_RATE, "duration": result["duration"],
        "audio_native": audio_cell(result["audio_native"], f"{utterance.utterance_id}.native.flac"),
        "native_sampling_rate": result["native_sampling_rate"], "backend": result["backend"], "key": utterance.key,
        "answers": utterance.answers,
    }


def content_hash(table: pa.Table) -> str:
    """Hash of the dataset's content, independent of row order and sharding: equal for a resumed
    build and an uninterrupted one."""
    ids = table.column("utterance_id").to_pylist()
    columns = {name: table.column(name).to_pylist() for name in ("key", "speaker", "text", "audio", "audio_native")}
    digest = hashlib.sha256()
    for i in sorted(range(len(ids)), key=ids.__getitem__):
        audio = hashlib.sha256(columns["audio"][i]["bytes"]).hexdigest()
        native = hashlib.sha256(columns["audio_native"][i]["bytes"]).hexdigest()
        digest.update(f"{ids[i]}|{columns['key'][i]}|{columns['speaker'][i]}|{columns['text'][i]}|{audio}|{native}\n".encode())
    return digest.hexdigest()


def dialogue_rows(kept: list[Utterance]) -> pa.Table:
    return pa.Table.from_pylist([{
        "dialogue_id": u.dialogue_id, "turn_index": u.turn_index, "role": u.role, "speaker": u.speaker,
        "original_text": u.original_text, "text": u.text, "segments": list(u.segments),
        "truncated": u.truncated, "key": u.key} for u in kept], schema=DIALOGUE_SCHEMA)


def summarize(speech: pa.Table, dialogues: int, rejects: list[Reject], synthesized: int) -> dict:
    durations = speech.column("duration").to_pylist()
    roles = speech.column("role").to_pylist()
    return {
        "dialogues": dialogues,
        "turns": speech.num_rows,
        "user_turns": roles.count("user"),
        "assistant_turns": roles.count("assistant"),
        "hours": round(sum(durations) / 3600, 4),
        "speakers": len(set(speech.column("speaker").to_pylist())),
        "rejects": len(rejects),
        "rejects_by_reason": dict(Counter(r.reason for r in rejects)),
        "synthesized_this_run": synthesized,
    }


def publish_build(store: ArtifactStore, name: str, plan: Plan, results: dict[str, dict],
                  config: dict, config_hash: str, source: dict, synthesized: int,
                  flow_run_id: str | None = None, on_reject: str = "drop") -> BuildResult:
    kept, failed = kept_utterances(plan, results, on_reject)
    rejects = plan.rejects + failed
    new_table = pa.Table.from_pylist([speech_row(u, results[u.key]) for u in kept], schema=speech_schema())
    quality = quality_rows(kept, results)
    fingerprint = content_hash(new_table)
    summary = summarize(new_table, len({u.dialogue_id for u in kept}), rejects, synthesized)
    summary.update(content_hash=fingerprint, voices=plan.voices, source=source, gate=gate_summary(quality, failed))

    previous = store.latest_manifest(Kind.speech, name)
    if previous is not None and previous.made_as(fingerprint, config_hash):
        current = {**previous.stats, "synthesized_this_run": synthesized, "reused_rows": previous.stats["turns"]}
        [dialogues] = previous.parents_of(Kind.dialogues)
        return BuildResult(store.manifest(dialogues), previous, current, published=False)

    text_writer = store.writer(Kind.dialogues, name, config=config, config_hash=config_hash, flow_run_id=flow_run_id)
    text_writer.write_table("data", dialogue_rows(kept))
    text_writer.write_table("rejects", pa.Table.from_pylist([r.as_row() for r in rejects], schema=REJECT_SCHEMA))
    text_writer.stats.update({k: summary[k] for k in ("dialogues", "turns", "rejects", "rejects_by_reason", "source")})
    dialogues = text_writer.publish()

    wanted = dict(zip(new_table.column("utterance_id").to_pylist(), new_table.column("key").to_pylist()))
    same_schema = previous is not None and previous.tables["data"].holds(new_table.schema)
    old_ids = unchanged_rows(store, previous, wanted) if same_schema else None  # older layouts are rewritten
    reused = bool(old_ids)
    parents = [dialogues] + ([previous] if reused else [])
    speech_writer = store.writer(Kind.speech, name, parents=parents, config=config, config_hash=config_hash,
                                 flow_run_id=flow_run_id)
    if reused:
        speech_writer.reuse_shards("data", previous)
        mask = pa.array([uid not in old_ids for uid in new_table.column("utterance_id").to_pylist()])
        new_table = new_table.filter(mask)
    if new_table.num_rows or not reused:
        speech_writer.write_table("data", new_table)
    speech_writer.write_table("quality", quality)
    summary["reused_rows"] = summary["turns"] - new_table.num_rows if reused else 0
    speech_writer.stats.update(summary)
    return BuildResult(dialogues, speech_writer.publish(), summary)
