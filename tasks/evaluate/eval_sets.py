"""Spoken questions with reference answers, from the layouts users have:

- LLaMA-Omni 2's `questions.json` (or JSONL, one item per line): `{"id", "conversation": [{"from":
  "human", "text", "speech": "wav/x.wav"}, {"from": "gpt", "text"}...]}` with wav paths relative to
  the file, any WAV encoding, rate and channel count; references are an item's `answer`/`answers`,
  else its assistant turns' text (any layout `tasks.common.records` parses is read the same way);
- a speech version of our store (`speech/NAME[@version]`), e.g. the demo's held-out voices.

Items are `Dialogue` records. Multi-turn items are answered turn by turn: every user turn carries
speech and is scored against the assistant turn after it (or the item's answers, for its last turn).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.storage import ArtifactRef, ArtifactStore, Manifest
from omniforge.storage.audio import decode_audio
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.records import Dialogue, RecordError, Turn, parse_record


class EvalSetError(ValueError):
    """An eval set record that cannot be used; the message names the record and the field."""


def load_eval_set(source: str, store: ArtifactStore, limit: int | None = None) -> tuple[list[Dialogue], Manifest | None]:
    """Items of an eval set and, when it is a speech version, that version (for lineage)."""
    if Path(source).suffix in (".json", ".jsonl"):
        return load_questions_file(Path(source))[:limit], None
    manifest = store.manifest(store.resolve(ArtifactRef.parse(source)))
    return _from_speech_version(store, manifest)[:limit], manifest


def input_wave(turn: Turn) -> np.ndarray:
    """A user turn's speech as the model hears it: mono, at the model's input rate."""
    wave, rate = decode_audio(turn.audio)
    return resample(wave, rate, INPUT_SAMPLE_RATE)


def load_questions_file(path: Path) -> list[Dialogue]:
    text = path.read_text()
    records = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    items = []
    for number, record in enumerate(records):
        name = f"{path.name} item {record.get('id', number)!r}" if isinstance(record, dict) else f"{path.name} item {number}"
        try:
            item = parse_record(record, name, str(path.parent), answered_only=False)
            for index, turn in enumerate(item.turns):
                if turn.role == "user":
                    _check_speech(turn, index)
        except RecordError as err:
            raise EvalSetError(f"{name}: field '{err.field}': {err.reason}{' (' + err.detail + ')' if err.detail else ''}") from None
        if not isinstance(record.get("id"), (str, int)):
            item.id = str(number)
        items.append(item)
    return items


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
