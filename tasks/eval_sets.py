"""Spoken questions with reference answers, from the layouts users have:

- LLaMA-Omni 2's `questions.json` (or JSONL, one item per line): `{"id", "conversation": [{"from":
  "human", "text", "speech": "wav/x.wav"}, {"from": "gpt", "text"}...]}` with wav paths relative to
  the file, any WAV encoding, rate and channel count; references are an item's `answer`/`answers`,
  else its assistant turns' text;
- a speech version of our store (`speech/NAME[@version]`), e.g. the demo's held-out voices.

Multi-turn items are answered turn by turn: every user turn carries speech and is scored against
the assistant turn after it (or the item's answers, for its last turn).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from storage import ArtifactStore, Manifest
from storage.audio import decode_audio
from storage.names import ArtifactRef
from tasks.audio_ops import resample

EVAL_RATE = 16000
USER_ROLES = {"human", "user"}


@dataclass
class EvalTurn:
    wave: np.ndarray                       # the user's speech, 16 kHz mono
    question: str                          # its transcript, when known
    references: list[str] = field(default_factory=list)


@dataclass
class EvalItem:
    item_id: str
    turns: list[EvalTurn]


class EvalSetError(ValueError):
    """An eval set record that cannot be used; the message names the record and the field."""


def load_eval_set(source: str, store: ArtifactStore, limit: int | None = None) -> tuple[list[EvalItem], Manifest | None]:
    """Items of an eval set and, when it is a speech version, that version (for lineage)."""
    if Path(source).suffix in (".json", ".jsonl"):
        return load_questions_file(Path(source))[:limit], None
    manifest = store.manifest(store.resolve(ArtifactRef.parse(source)))
    return _from_speech_version(store, manifest)[:limit], manifest


def _read_wave(path: Path, record: str) -> np.ndarray:
    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as err:
        raise EvalSetError(f"{record}: field 'speech': cannot read {path} ({err})") from None
    return resample(wave.mean(axis=1), rate, EVAL_RATE)


def load_questions_file(path: Path) -> list[EvalItem]:
    text = path.read_text()
    records = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    items = []
    for number, record in enumerate(records):
        name = f"{path.name} item {record.get('id', number)!r}"
        conversation = record.get("conversation")
        if not isinstance(conversation, list) or not conversation:
            raise EvalSetError(f"{name}: field 'conversation' must be a non-empty list of turns")
        turns = []
        for index, turn in enumerate(conversation):
            role = turn.get("from")
            if role in USER_ROLES:
                if not turn.get("speech"):
                    raise EvalSetError(f"{name}: field 'conversation[{index}].speech' is missing (user turns need a wav)")
                turns.append(EvalTurn(_read_wave(path.parent / turn["speech"], f"{name} turn {index}"), turn.get("text", "")))
            elif turns and turn.get("text"):
                turns[-1].references.append(turn["text"])
        answers = record.get("answers", record.get("answer"))
        if answers and turns:
            turns[-1].references = [answers] if isinstance(answers, str) else list(answers)
        if not turns:
            raise EvalSetError(f"{name}: field 'conversation' has no user turn ('from': 'human')")
        items.append(EvalItem(str(record.get("id", number)), turns))
    return items


def _from_speech_version(store: ArtifactStore, manifest: Manifest) -> list[EvalItem]:
    rows = defaultdict(list)
    for batch in store.iter_batches(manifest, columns=["dialogue_id", "turn_index", "role", "text", "audio"]):
        for row in batch.to_pylist():
            rows[row["dialogue_id"]].append(row)
    items = []
    for dialogue_id, turns in rows.items():
        turns.sort(key=lambda r: r["turn_index"])
        eval_turns = []
        for row in turns:
            if row["role"] == "user":
                wave, rate = decode_audio(row["audio"]["bytes"])
                eval_turns.append(EvalTurn(resample(wave, rate, EVAL_RATE), row["text"]))
            elif eval_turns:
                eval_turns[-1].references.append(row["text"])
        if eval_turns:
            items.append(EvalItem(dialogue_id, eval_turns))
    return sorted(items, key=lambda item: item.item_id)
