"""Spoken questions with reference answers, from the layouts users have:

- LLaMA-Omni 2's `questions.json` (or JSONL, one item per line): `{"id", "conversation": [{"from":
  "human", "text", "speech": "examples/wav/x.wav"}, {"from": "gpt", "text"}...]}` with wav paths
  relative to the file or to the working directory (its repository writes them relative to its
  root), any WAV encoding, rate and channel count; references are an item's `answer`/`answers`,
  else its assistant turns' text (any layout `tasks.common.records` parses is read the same way);
- a speech version of our store (`speech/NAME[@version]`), e.g. the demo's held-out voices.

Items are `Dialogue` records. Multi-turn items are answered turn by turn: every user turn carries
speech and is scored against the assistant turn after it (or the item's answers, for its last turn).
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from omniforge.config.media import MediaConfig
from omniforge.errors import InputError
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.storage import ArtifactRef, ArtifactStore, Manifest
from omniforge.storage.audio import decode_audio
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.records import Dialogue, RecordError, Reject, Turn, media_roots, parse_record, read_jsonl


class EvalSetError(InputError, ValueError):
    """An eval set that cannot be used at all (no usable item); the message says why."""


@dataclass
class EvalSet:
    items: list[Dialogue]
    rejects: list[Reject] = field(default_factory=list)  # items left out, each naming its field and reason
    speech: Manifest | None = None  # the speech version it came from (lineage), if any


def load_eval_set(source: str, store: ArtifactStore, limit: int | None = None, root: str | None = None,
                  media: MediaConfig | None = None) -> EvalSet:
    """The items of an eval set (at most `limit`); a questions file's unusable items are rejects.
    `root`: where its relative wav paths are looked up after the file's folder (`media_roots`)."""
    version = speech_version_named(source)
    if version is None:
        loaded = load_questions_file(source, root, media)
    else:
        manifest = store.manifest(store.resolve(version))
        loaded = EvalSet(_from_speech_version(store, manifest), speech=manifest)
    if not loaded.items:
        reasons = "; ".join(f"{r.record}: {r.field}: {r.reason}{': ' + r.detail if r.detail else ''}"
                            for r in loaded.rejects[:3])
        raise EvalSetError(f"{source}: no usable item{' (' + reasons + ')' if reasons else ''}")
    loaded.items = loaded.items[:limit]
    return loaded


def speech_version_named(source: str) -> ArtifactRef | None:
    """The speech version an eval set names (speech/NAME[@version]); None for a questions file."""
    return None if Path(source).suffix in (".json", ".jsonl") else ArtifactRef.parse(source)


def input_wave(turn: Turn) -> np.ndarray:
    """A user turn's speech as the model hears it: mono, at the model's input rate."""
    wave, rate = decode_audio(turn.audio)
    return resample(wave, rate, INPUT_SAMPLE_RATE)


def load_questions_file(path: str, root: str | None = None, media: MediaConfig | None = None) -> EvalSet:
    """A questions.json (a list of items) or JSONL file. Never raises for its content: a file that
    is not UTF-8 JSON, or an item without a readable wav for each question, becomes a reject."""
    name = posixpath.basename(path)
    media = media or MediaConfig()
    records = list(read_jsonl(path, media.max_record_bytes)) if path.endswith(".jsonl") else _json_items(path)
    loaded = EvalSet([])
    roots = media_roots(path, media, root)
    for number, (origin, record) in enumerate(records):
        record_id = record.get("id") if isinstance(record, dict) else None
        label = f"{name} item {record_id!r}" if isinstance(record_id, (str, int)) else f"{name} {origin}"
        try:
            if isinstance(record, RecordError):
                raise record
            item = parse_record(record, label, roots, answered_only=False)
            for index, turn in enumerate(item.turns):
                if turn.role == "user":
                    _check_speech(turn, index)
        except RecordError as err:
            loaded.rejects.append(Reject(label, err.field, err.reason, err.detail))
            continue
        if not isinstance(record_id, (str, int)):
            item.id = str(number)
        loaded.items.append(item)
    return loaded


def _json_items(path: str) -> list[tuple[str, Any]]:
    """A JSON file's items as (origin, record); the whole file as one RecordError when it cannot be read."""
    try:
        with fsspec.open(path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        return [("file", RecordError("<file>", "bad_encoding", f"not UTF-8 at byte {err.start}"))]
    except (ValueError, RecursionError) as err:
        return [("file", RecordError("<file>", "malformed_json", str(err)[:200]))]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return [("file", RecordError("<file>", "malformed_record", f"expected a list of items, got {type(data).__name__}"))]
    return [(f"item {i}", record) for i, record in enumerate(data)]


def _check_speech(turn: Turn, index: int) -> None:
    where = f"conversation[{index}].speech"
    if turn.audio is None:
        raise RecordError(where, "missing_audio", "user turns need a wav")
    try:
        decode_audio(turn.audio)
    except Exception as err:  # noqa: BLE001 - soundfile raises several types
        raise RecordError(where, "bad_audio", str(err)) from err


def _from_speech_version(store: ArtifactStore, manifest: Manifest) -> list[Dialogue]:
    rows = defaultdict(list)
    columns = ["dialogue_id", "turn_index", "role", "text", "audio"]
    columns += ["answers"] if "answers" in manifest.tables["data"].columns else []  # older versions lack it
    for batch in store.iter_batches(manifest, columns=columns):
        for row in batch.to_pylist():
            rows[row["dialogue_id"]].append(row)
    items = []
    for dialogue_id, turns in rows.items():
        turns.sort(key=lambda r: r["turn_index"])
        items.append(Dialogue(dialogue_id, [Turn(r["role"], r["text"], r["audio"]["bytes"] if r["audio"] else None,
                                                 r.get("answers") or []) for r in turns], origin=str(manifest.ref())))
    return sorted((i for i in items if any(t.role == "user" for t in i.turns)), key=lambda item: item.id)
