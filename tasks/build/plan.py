"""From parsed dialogues to the utterances to synthesize, each keyed by a content hash.

The key covers everything that determines the audio (spoken text, voice settings, engine and
voice-file identity, output rate, and the checks and quality gate that may reject it or ask for
another try), so an utterance is synthesized once, whatever run, version or
dialogue asks for it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omniforge.config.build import BuildConfig
from omniforge.hashing import sha256_bytes, stable_hash
from omniforge.model.mel import INPUT_SAMPLE_RATE
from omniforge.tasks.common.ray_runtime import map_on_actors
from omniforge.tasks.common.records import Dialogue, Reject, SourceBatch
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


@dataclass
class Plan:
    utterances: list[Utterance] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    voices: dict = field(default_factory=dict)  # the assistant voice and the user pool
    source: dict = field(default_factory=dict)  # what the dialogues were read from

    def jobs(self) -> list[dict]:
        unique = {u.key: u.job() for u in self.utterances}
        return list(unique.values())


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


def plan_build(batch: SourceBatch, config: BuildConfig, with_espeak: bool) -> Plan:
    """Normalize every turn, give every dialogue its voices, key every utterance. A dialogue with
    a turn that cannot be spoken is left out whole, with the turn and reason in the rejects. With
    `planning.workers` > 1 and more dialogues than one batch, on Ray actors (needs a Ray session)."""
    worker = PlanWorker(config, with_espeak)
    plan = Plan(rejects=list(batch.rejects), voices={"assistant": worker.assistant.config.model_dump(mode="json"),
                                                     "users": describe_pool(worker.pool)}, source=batch.description)
    items = list(enumerate(batch.dialogues))
    settings = config.planning
    if planned_on_ray(config, len(items)):
        outcomes: list = []
        map_on_actors(PlanWorker, (config, with_espeak), items, settings.batch_size, settings.workers, outcomes.extend)
        outcomes.sort(key=lambda outcome: outcome[0])
    else:
        outcomes = worker.run(items)
    for _, outcome in outcomes:
        if isinstance(outcome, Reject):
            plan.rejects.append(outcome)
        else:
            plan.utterances.extend(outcome)
    return plan


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
