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
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.storage import ArtifactStore, Kind, Manifest
from omniforge.storage.audio import audio_cell
from omniforge.storage.schemas import DIALOGUE_SCHEMA, QUALITY_SCHEMA, REJECT_SCHEMA, speech_schema
from omniforge.tasks.common.records import Reject
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


def kept_utterances(utterances: list[Utterance], results: dict[str, dict],
                    on_reject: str = "drop") -> tuple[list[Utterance], list[Reject]]:
    """Of whole dialogues' `utterances`, those of dialogues whose every turn succeeded, and a reject per
    failed dialogue; with `on_reject` "cut", a failed dialogue keeps its turns before the failed one
    when they end with an answer."""
    by_dialogue: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        by_dialogue.setdefault(utterance.dialogue_id, []).append(utterance)
    kept, rejects = [], []
    for dialogue_id, turns in by_dialogue.items():
        failed = next((u for u in turns if results.get(u.key, {}).get("audio") is None), None)
        if failed is None:
            kept.extend(turns)
            continue
        row = results.get(failed.key, {})
        before = turns[: turns.index(failed)] if on_reject == "cut" else []
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


def histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"n": len(values), "median": round(float(np.median(values)), 4), "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4), "edges": [round(float(e), 4) for e in edges],
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


def row_digest(row: dict) -> int:
    """One speech row's content (id, key, speaker, text and both audio files) as a 256-bit number."""
    audio = hashlib.sha256(row["audio"]["bytes"]).hexdigest()
    native = hashlib.sha256(row["audio_native"]["bytes"]).hexdigest()
    line = f"{row['utterance_id']}|{row['key']}|{row['speaker']}|{row['text']}|{audio}|{native}"
    return int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")


class SpeechTally:
    """What a speech version's summary says of its rows, added up a part at a time (a dataset of any
    size is summarized without holding it). The content hash is the sum of the rows' digests modulo
    2^256: independent of row order and sharding, so equal for a resumed build and an uninterrupted one."""

    def __init__(self) -> None:
        self.roles: Counter[str] = Counter()
        self.dialogue_ids: set[str] = set()
        self.speakers: set[str] = set()
        self.seconds = 0.0
        self.digest = 0
        self.attempts: list[np.ndarray] = []
        self.figures: dict[str, list[np.ndarray]] = {name: [] for name in GATE_FIGURES}

    def add(self, speech: pa.Table, quality: pa.Table | None = None) -> None:
        """Rows of the speech schema (at least dialogue_id, role, speaker, duration), their gate figures."""
        self.roles.update(speech.column("role").to_pylist())
        self.dialogue_ids.update(speech.column("dialogue_id").to_pylist())
        self.speakers.update(speech.column("speaker").to_pylist())
        self.seconds += float(pc.sum(speech.column("duration")).as_py() or 0.0)
        if quality is not None:
            self.attempts.append(_values(quality, "attempts"))
            for name in GATE_FIGURES:
                self.figures[name].append(_values(quality, name))

    def add_rows(self, rows: list[dict]) -> None:
        self.digest = (self.digest + sum(row_digest(row) for row in rows)) % 2 ** 256

    @property
    def content_hash(self) -> str:
        return f"{self.digest:064x}"

    def summary(self, rejects: list[Reject], synthesized: int) -> dict:
        return {
            "dialogues": len(self.dialogue_ids),
            "turns": sum(self.roles.values()),
            "user_turns": self.roles["user"],
            "assistant_turns": self.roles["assistant"],
            "hours": round(self.seconds / 3600, 4),
            "speakers": len(self.speakers),
            "rejects": len(rejects),
            "rejects_by_reason": dict(Counter(r.reason for r in rejects)),
            "synthesized_this_run": synthesized,
        }

    def gate_summary(self, rejects: list[Reject]) -> dict:
        """How the gate went: utterances said more than once, rejects by reason, each figure's spread."""
        attempts = np.concatenate([np.zeros(0), *self.attempts])
        figures = {}
        for name, parts in self.figures.items():
            values = np.concatenate([np.zeros(0), *parts])
            if len(values):
                figures[name] = histogram(values)
        return {"resynthesized": int((attempts > 1).sum()), "extra_tries": int((attempts - 1).sum()),
                "rejected": dict(Counter(r.reason for r in rejects if r.reason in GATE_REASONS)), "figures": figures}


def _values(table: pa.Table, name: str) -> np.ndarray:
    """A column's non-null values as float64."""
    return np.asarray([v for v in table.column(name).to_pylist() if v is not None], dtype=np.float64)


def dialogue_rows(kept: list[Utterance]) -> pa.Table:
    return pa.Table.from_pylist([{
        "dialogue_id": u.dialogue_id, "turn_index": u.turn_index, "role": u.role, "speaker": u.speaker,
        "original_text": u.original_text, "text": u.text, "segments": list(u.segments),
        "truncated": u.truncated, "key": u.key} for u in kept], schema=DIALOGUE_SCHEMA)


def previous_keys(store: ArtifactStore, previous: Manifest | None) -> dict[str, str]:
    """utterance id -> key of the previous version's rows, when new shards may join its shards (the same
    schema); empty otherwise (an older layout is rewritten whole)."""
    if previous is None or not previous.tables["data"].holds(speech_schema()):
        return {}
    old = store.read_table(previous, columns=["utterance_id", "key"])
    return dict(zip(old.column("utterance_id").to_pylist(), old.column("key").to_pylist()))


def dialogue_chunks(parts: Iterable[list[Utterance]], most: int) -> Iterator[list[Utterance]]:
    """Whole dialogues' utterances, at most `most` a chunk (a longer dialogue alone): what publishing
    holds with its audio at once."""
    for part in parts:
        chunk: list[Utterance] = []
        for _, turns in groupby(part, key=lambda u: u.dialogue_id):
            turns = list(turns)
            if chunk and len(chunk) + len(turns) > most:
                yield chunk
                chunk = []
            chunk += turns
        if chunk:
            yield chunk


def publish_build(store: ArtifactStore, name: str, plan: Plan, lookup: Callable[[list[Utterance]], dict[str, dict]],
                  config: dict, config_hash: str, synthesized: int, flow_run_id: str | None = None,
                  on_reject: str = "drop") -> BuildResult:
    """Both versions from the plan a shard's worth of whole dialogues at a time (`lookup`: the results
    of their utterances).
    Rows the previous version holds with the same key are not written again: its shards are referenced
    when every one of its rows is still wanted, else those rows are copied from them."""
    previous = store.latest_manifest(Kind.speech, name)
    old = previous_keys(store, previous)
    text_writer = store.writer(Kind.dialogues, name, config=config, config_hash=config_hash, flow_run_id=flow_run_id)
    speech_writer = store.writer(Kind.speech, name, config=config, config_hash=config_hash, flow_run_id=flow_run_id)
    tally, failed, carried = SpeechTally(), [], set()
    for chunk in dialogue_chunks(plan.parts(), store.rows_per_shard):
        results = lookup(chunk)
        kept, rejected = kept_utterances(chunk, results, on_reject)
        failed += rejected
        rows = [speech_row(u, results[u.key]) for u in kept]
        table, quality = pa.Table.from_pylist(rows, schema=speech_schema()), quality_rows(kept, results)
        tally.add(table, quality)
        tally.add_rows(rows)
        text_writer.append("data", dialogue_rows(kept))
        speech_writer.append("quality", quality)
        unchanged = {u.utterance_id for u in kept if old.get(u.utterance_id) == u.key}
        carried |= unchanged
        speech_writer.append("data", table.filter(pa.array([r["utterance_id"] not in unchanged for r in rows],
                                                           type=pa.bool_())))
    rejects = plan.rejects + failed
    summary = tally.summary(rejects, synthesized)
    summary.update(content_hash=tally.content_hash, voices=plan.voices, source=plan.source,
                   gate=tally.gate_summary(failed))

    if previous is not None and previous.made_as(tally.content_hash, config_hash):
        text_writer.discard()
        speech_writer.discard()
        current = {**previous.stats, "synthesized_this_run": synthesized, "reused_rows": previous.stats["turns"]}
        [dialogues] = previous.parents_of(Kind.dialogues)
        return BuildResult(store.manifest(dialogues), previous, current, published=False)

    text_writer.write_table("rejects", pa.Table.from_pylist([r.as_row() for r in rejects], schema=REJECT_SCHEMA))
    text_writer.ensure_table("data", DIALOGUE_SCHEMA)
    text_writer.stats.update({k: summary[k] for k in ("dialogues", "turns", "rejects", "rejects_by_reason", "source")})
    dialogues = text_writer.publish()

    reused = bool(old) and carried == old.keys()
    if reused:
        speech_writer.reuse_shards("data", previous, first=True)
    elif carried:
        wanted = pa.array(sorted(carried), type=pa.string())
        for batch in store.iter_batches(previous, batch_size=store.rows_per_shard):
            keep = pc.is_in(batch.column("utterance_id"), value_set=wanted)
            speech_writer.append("data", pa.Table.from_batches([batch]).filter(keep))
    speech_writer.ensure_table("data", speech_schema())
    speech_writer.ensure_table("quality", QUALITY_SCHEMA)
    speech_writer.add_parents([dialogues] + ([previous] if reused else []))
    summary["reused_rows"] = len(carried) if reused else 0
    speech_writer.stats.update(summary)
    return BuildResult(dialogues, speech_writer.publish(), summary)
