"""From parsed dialogues to the utterances to synthesize, each keyed by a content hash.

The key covers everything that determines the audio (spoken text, voice settings, engine and
voice-file identity, output rate, and the checks and quality gate that may reject it or ask for
another try), so an utterance is synthesized once, whatever run, version or
dialogue asks for it again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import chain, islice

import pyarrow as pa
import pyarrow.parquet as pq

from omniforge.config.build import BuildConfig, VoiceConfig
from omniforge.hashing import sha256_bytes, stable_hash
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.tasks.common.ray_runtime import batched, map_on_actors
from omniforge.tasks.common.records import Dialogue, Reject
from omniforge.tasks.build.gate import gate_identity
from omniforge.tasks.common.speech_text import Unspeakable, to_spoken
from omniforge.tasks.build.tts import engine_identity
from omniforge.tasks.build.voices import (Voice, assistant_voice, describe_pool, speakable_scripts, user_voice_for,
                                         user_voice_pool)


@dataclass
class Utterance:
    utterance_id: str
    dialogue_id: str
    turn_index: int
    role: str
    speaker: str
    text: str
    original_text: str
    segments: tuple[str, ...]
    voice: Voice
    key: str
    provided_audio: bytes | None = None
    truncated: bool = False
    answers: list[str] = field(default_factory=list)

    def job(self) -> dict:
        """What a synthesis worker needs (no dialogue metadata: equal keys are equal jobs)."""
        return {"key": self.key, "segments": list(self.segments), "voice": self.voice.config.model_dump(),
                "provided_audio": self.provided_audio}


# the planned utterances as the spill holds them (a voice as its speaker and settings)
PLAN_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("dialogue_id", pa.string()), ("turn_index", pa.int32()), ("role", pa.string()),
    ("speaker", pa.string()), ("text", pa.string()), ("original_text", pa.string()),
    ("segments", pa.list_(pa.string())), ("voice_speaker", pa.string()), ("voice", pa.string()), ("key", pa.string()),
    ("provided_audio", pa.binary()), ("truncated", pa.bool_()), ("answers", pa.list_(pa.string())),
])


SPILLED_VOICE = ("voice_speaker", "voice")


class PlanSpill:
    """The planned utterances on local disk, in source order, whole dialogues per part: a build of any
    size plans, synthesizes and publishes holding one part at a time. The folder goes with the object."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="omniforge-plan-")
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.parts: list[str] = []
        self.utterances = self.dialogues = 0

    def add(self, utterances: list[Utterance], dialogues: int) -> None:
        """One part: the utterances of `dialogues` whole dialogues."""
        rows = [{**{name: getattr(u, name) for name in PLAN_SCHEMA.names if name not in SPILLED_VOICE},
                 "segments": list(u.segments), "voice_speaker": u.voice.speaker,
                 "voice": u.voice.config.model_dump_json()} for u in utterances]
        path = os.path.join(self.folder, f"part-{len(self.parts):06d}.parquet")
        pq.write_table(pa.Table.from_pylist(rows, schema=PLAN_SCHEMA), path)
        self.parts.append(path)
        self.utterances += len(utterances)
        self.dialogues += dialogues

    def read(self, path: str, columns: list[str] | None = None) -> list[dict]:
        return pq.read_table(path, columns=columns).to_pylist()


@dataclass
class Plan:
    spill: PlanSpill = field(default_factory=PlanSpill)
    rejects: list[Reject] = field(default_factory=list)
    voices: dict = field(default_factory=dict)  # the assistant voice and the user pool
    source: dict = field(default_factory=dict)  # what the dialogues were read from

    @property
    def utterance_count(self) -> int:
        return self.spill.utterances

    @property
    def dialogue_count(self) -> int:
        return self.spill.dialogues

    def parts(self) -> Iterator[list[Utterance]]:
        """The utterances one part at a time (whole dialogues, source order)."""
        voices: dict[tuple[str, str], Voice] = {}
        for path in self.spill.parts:
            part = []
            for row in self.spill.read(path):
                speaker, settings = (row.pop(name) for name in SPILLED_VOICE)
                voice = voices.get((speaker, settings))
                if voice is None:
                    voice = voices[(speaker, settings)] = Voice(speaker, VoiceConfig.model_validate_json(settings))
                part.append(Utterance(**{**row, "segments": tuple(row["segments"]), "voice": voice}))
            yield part

    def utterances(self) -> Iterator[Utterance]:
        for part in self.parts():
            yield from part

    def keys(self) -> Iterator[str]:
        """Every utterance's key, in plan order (repeats included), read without the rest."""
        for path in self.spill.parts:
            for row in self.spill.read(path, ["key"]):
                yield row["key"]

    def jobs(self) -> Iterator[dict]:
        """The synthesis jobs, each key once, read a part at a time and each part's longest first (so
        that the last batches are short and the workers finish together)."""
        seen: set[str] = set()
        for part in self.parts():
            jobs = {u.key: u.job() for u in part if u.key not in seen}
            seen.update(jobs)
            yield from sorted(jobs.values(), key=spoken_chars, reverse=True)


def spoken_chars(job: dict) -> int:
    """What a job costs to synthesize, in characters to say (provided audio is only resampled)."""
    return 0 if job.get("provided_audio") is not None else sum(len(s) for s in job["segments"])


def utterance_key(segments: tuple[str, ...], voice: Voice, config: BuildConfig, provided: bytes | None) -> str:
    # the checks and the gate decide which audio an utterance ends with (a retry, or none)
    judged = {"validation": config.validation.model_dump(mode="json"), "gate": gate_identity(config.gate)}
    if provided is not None:
        return stable_hash({"provided": sha256_bytes(provided), "rate": INPUT_SAMPLE_RATE, **judged}, length=32)
    return stable_hash({
        "segments": segments,
        "voice": voice.config.model_dump(mode="json"),
        "engine": engine_identity(voice.config, config.tts),
        "rate": INPUT_SAMPLE_RATE,
        "pause": config.text.segment_pause_s,
        **judged,
    }, length=32)


class PlanWorker:
    """Makes dialogues speakable and keys their utterances. Plain class: the same code plans in the
    driver and on Ray actors, where the text normalization (NeMo's grammars: 13-60 ms a turn with a
    number in it) scales out with the workers."""

    def __init__(self, config: BuildConfig, with_espeak: bool) -> None:
        self.config = config
        self.pool = user_voice_pool(config.tts.users, with_espeak)
        self.assistant = assistant_voice(config.tts)
        self.scripts = speakable_scripts([self.assistant, *self.pool])

    def run(self, items: list[tuple[int, Dialogue]]) -> list[tuple[int, list[Utterance] | Reject]]:
        """(position, dialogue) -> (position, its utterances, or the reject of its first unspeakable turn)."""
        return [(position, self.one(dialogue)) for position, dialogue in items]

    def one(self, dialogue: Dialogue) -> list[Utterance] | Reject:
        user = user_voice_for(dialogue.id, self.pool, self.config.tts.users.seed)
        try:
            return _plan_dialogue(dialogue, user, self.assistant, self.config, self.scripts)
        except _TurnRejected as err:
            return Reject(dialogue.id, f"turns[{err.turn}].text", err.reason, err.detail)


def plan_build(dialogues: Iterable[Dialogue], source_rejects: list[Reject], source: dict, config: BuildConfig,
               with_espeak: bool, ray: Callable[[], AbstractContextManager] | None = None) -> Plan:
    """Normalize every turn, give every dialogue its voices, key every utterance, spilling whole dialogues
    to the plan's parts as they are planned (`planning.spill_dialogues` at a time). A dialogue with a
    turn that cannot be spoken is left out whole, with the turn and reason in the rejects, after the
    source's own (`source_rejects`, complete once `dialogues` is read; `source` likewise). With
    `planning.workers` > 1, a `ray` session and more dialogues than one batch, on Ray actors."""
    worker = PlanWorker(config, with_espeak)
    plan = Plan(voices={"assistant": worker.assistant.config.model_dump(mode="json"),
                        "users": describe_pool(worker.pool)})
    settings = config.planning
    stream = iter(dialogues)
    head = list(islice(stream, settings.batch_size + 1))
    items = enumerate(chain(head, stream))
    spilled, rejects = _Spiller(plan.spill, settings.spill_dialogues), []

    def take(outcomes: list[tuple[int, list[Utterance] | Reject]]) -> None:
        for _, outcome in outcomes:
            if isinstance(outcome, Reject):
                rejects.append(outcome)
            else:
                spilled.add(outcome)

    if ray is not None and planned_on_ray(config, len(head)):
        with ray():
            map_on_actors(PlanWorker, (config, with_espeak), items, settings.batch_size, settings.workers,
                          in_order(take))
    else:
        for batch in batched(items, settings.batch_size):
            take(worker.run(batch))
    spilled.flush()
    plan.rejects, plan.source = [*source_rejects, *rejects], dict(source)
    return plan


class _Spiller:
    """Collects planned dialogues and spills them to the plan a part at a time."""

    def __init__(self, spill: PlanSpill, dialogues_per_part: int) -> None:
        self.spill, self.size = spill, dialogues_per_part
        self.utterances: list[Utterance] = []
        self.dialogues = 0

    def add(self, utterances: list[Utterance]) -> None:
        self.utterances.extend(utterances)
        self.dialogues += 1
        if self.dialogues >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.dialogues:
            self.spill.add(self.utterances, self.dialogues)
        self.utterances, self.dialogues = [], 0


def in_order(take: Callable[[list], None]) -> Callable[[list], None]:
    """A result callback that passes batches of (position, result) to `take` in position order,
    holding the ones that finish early."""
    waiting: dict[int, list] = {}
    expected = 0

    def on_result(batch: list) -> None:
        nonlocal expected
        waiting[batch[0][0]] = batch
        while expected in waiting:
            ready = waiting.pop(expected)
            take(ready)
            expected = ready[-1][0] + 1

    return on_result


def planned_on_ray(config: BuildConfig, dialogues: int) -> bool:
    """Whether `plan_build` will use Ray actors for this many dialogues."""
    return config.planning.workers > 1 and dialogues > config.planning.batch_size


class _TurnRejected(Exception):
    def __init__(self, turn: int, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.turn, self.reason, self.detail = turn, reason, detail


def _plan_dialogue(dialogue: Dialogue, user: Voice, assistant: Voice, config: BuildConfig,
                   scripts: frozenset[str]) -> list[Utterance]:
    planned = []
    for index, turn in enumerate(dialogue.turns):
        voice = user if turn.role == "user" else assistant
        try:
            spoken = to_spoken(turn.text, config.text, scripts)
        except Unspeakable as err:
            raise _TurnRejected(index, err.reason, str(err)) from None
        planned.append(Utterance(
            utterance_id=f"{dialogue.id}/{index}", dialogue_id=dialogue.id, turn_index=index, role=turn.role,
            speaker=voice.speaker if turn.audio is None else f"{dialogue.id}-{turn.role}-provided",
            text=spoken.text, original_text=turn.text, segments=spoken.segments, voice=voice,
            key=utterance_key(spoken.segments, voice, config, turn.audio),
            provided_audio=turn.audio, truncated=spoken.truncated, answers=list(turn.answers),
        ))
    return planned
