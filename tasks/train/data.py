"""From a speech version + a units version to training batches, streamed shard by shard.

An index of light columns (ids, roles, text, durations, units) is read once; audio is read only
for the batches being made, from at most two cached shards. The batch order is a pure function of
(seed, epoch), so a resumed run replays exactly the batches an uninterrupted run would see, and
skipping the finished ones costs nothing. Each window of dialogues is sorted by duration before it
is cut into batches (less padding); the batches are shuffled within the window.
"""

from __future__ import annotations

import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from omniforge.config.train import AugmentConfig
from omniforge.model.mel import WhisperLogMel
from omniforge.model.pronunciation import Pronounce, phoneme_rows
from omniforge.model.read_write import token_unit_counts
from omniforge.model.stage_objectives import StageBatch
from omniforge.storage import ArtifactStore
from omniforge.storage.audio import decode_audio
from omniforge.storage.manifest import Manifest
from omniforge.storage.schemas import WORD_FIELDS
from omniforge.tasks.common.audio_ops import resample
from omniforge.tasks.common.records import Turn, turn_order_problem
from omniforge.tasks.train.text_tokenizer import ChatFormat

LIGHT_COLUMNS = ["utterance_id", "dialogue_id", "turn_index", "role", "text", "duration"]
SHARDS_CACHED = 2
PREFETCH_BATCHES = 2
SPEED_STEPS = 20  # speed factors on a 0.05 grid


@dataclass(kw_only=True)
class StoredTurn(Turn):
    """A dialogue turn of a speech version, with where its audio and units are (audio is read
    only when a batch needs it)."""

    utterance_id: str
    turn_index: int
    duration: float
    shard: int
    units: list[int] | None = None
    words: tuple[list[int], list[float], list[float]] | None = None  # word chars, starts, ends (units.align)


@dataclass
class DialogueEntry:
    dialogue_id: str
    shard: int                      # the shard holding its first user turn (read order)
    turns: list[StoredTurn] = field(default_factory=list)

    @property
    def speech_seconds(self) -> float:
        return sum(t.duration for t in self.turns if t.role == "user")


@dataclass
class DialogueIndex:
    dialogues: list[DialogueEntry]
    shard_paths: list[str]
    skipped: dict[str, int]         # reason -> dialogues left out

    @classmethod
    def build(cls, store: ArtifactStore, speech: Manifest, units: Manifest | None, need_units: bool,
              need_dialogue: bool = True, need_words: bool = False) -> "DialogueIndex":
        """`need_dialogue`: only user/assistant dialogues are usable (s2t, s2s); without it any record
        with assistant turns is (TTS training also learns from a corpus of one-turn records).
        `need_words`: the units' word alignments too (aligned read-write)."""
        unit_table, words = _unit_tables(store, units, need_words)
        paths = [s.path for s in speech.tables["data"].shards]
        found: dict[str, DialogueEntry] = {}
        for shard, path in enumerate(paths):
            for row in store.read_shard(path, LIGHT_COLUMNS).to_pylist():
                entry = found.setdefault(row["dialogue_id"], DialogueEntry(row["dialogue_id"], shard))
                entry.turns.append(StoredTurn(role=row["role"], text=row["text"], utterance_id=row["utterance_id"],
                                              turn_index=row["turn_index"], duration=row["duration"], shard=shard,
                                              units=unit_table.get(row["utterance_id"]),
                                              words=words.get(row["utterance_id"])))
        kept, skipped = [], {}
        for entry in found.values():
            entry.turns.sort(key=lambda t: t.turn_index)
            reason = _unusable(entry, need_units, need_dialogue)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            entry.shard = min(t.shard for t in entry.turns if t.role == "user" or not need_dialogue)
            kept.append(entry)
        if not kept:
            raise ValueError(f"{speech.ref()}: no usable dialogue for training (left out: {skipped})")
        return cls(kept, paths, skipped)

    def rehearsing(self, corpus: "DialogueIndex", per_batch: int) -> tuple["DialogueIndex", "Rehearsal"]:
        """This index followed by `corpus`'s dialogues (their shards numbered after this one's), for a
        BatchMaker that adds `per_batch` of them to every batch: a number below len(self.dialogues) is the
        same dialogue in both indexes, so the batch plan stays this index's."""
        offset = len(self.shard_paths)
        moved = [DialogueEntry(d.dialogue_id, d.shard + offset, [replace(t, shard=t.shard + offset) for t in d.turns])
                 for d in corpus.dialogues]
        joined = DialogueIndex(self.dialogues + moved, self.shard_paths + corpus.shard_paths, self.skipped)
        return joined, Rehearsal(len(self.dialogues), len(corpus.dialogues), per_batch)

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, window: int) -> list[list[int]]:
        """Batches of dialogue indices for one epoch: shards in a seeded order, dialogues shuffled
        within their shard, windows sorted by duration, batches shuffled within each window."""
        rng = random.Random(f"{seed}/{epoch}")
        shards = list(range(len(self.shard_paths)))
        rng.shuffle(shards)
        order = []
        for shard in shards:
            members = [i for i, d in enumerate(self.dialogues) if d.shard == shard]
            rng.shuffle(members)
            order += members
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda i: self.dialogues[i].speech_seconds)
            group = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(group)
            batches += group
        return batches


def _unit_tables(store: ArtifactStore, units: Manifest | None,
                 need_words: bool) -> tuple[dict[str, list[int]], dict[str, tuple]]:
    """utterance id -> its units, and (`need_words`) -> its words' (chars, starts, ends) from a units
    version made with units.align; one read of the table."""
    if need_words and (units is None or not units.config.get("align", False)):
        raise ValueError(f"aligned read-write training needs word alignments: {units.ref() if units else 'no units'} "
                         "has none; tokenize the units with units.align=true")
    if units is None:
        return {}, {}
    names = [name for name, _ in WORD_FIELDS] if need_words else []
    table = store.read_table(units, columns=["utterance_id", "units", *names]).to_pydict()
    ids = table["utterance_id"]
    words = {uid: found for uid, *found in zip(ids, *(table[n] for n in names))} if need_words else {}
    return dict(zip(ids, table["units"])), words


def _unusable(entry: DialogueEntry, need_units: bool, need_dialogue: bool) -> str | None:
    roles = [t.role for t in entry.turns]
    problem = turn_order_problem(roles) if need_dialogue else None
    if problem is not None:
        return problem[1]
    if "assistant" not in roles:
        return "no user/assistant pair" if need_dialogue else "no assistant turn"
    if need_units and any(t.units is None for t in entry.turns if t.role == "assistant"):
        return "assistant turn without units"
    return None


def unit_counts(chat: ChatFormat, turn: StoredTurn, frame_rate: float) -> list[int]:
    """Each of the turn's text tokens' share of its units (aligned read-write), from its word alignment."""
    chars, starts, ends = turn.words
    return token_unit_counts(chat.token_starts(turn.text), chars, starts, ends, len(turn.text), len(turn.units),
                             frame_rate)


def prefetch(items: Iterator, ahead: int) -> Iterator:
    """Run `items` on a daemon thread, at most `ahead` items in front of the consumer; its errors
    are raised in the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=ahead)
    done = object()

    def fill() -> None:
        try:
            for item in items:
                slots.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            slots.put(err)
        slots.put(done)

    threading.Thread(target=fill, daemon=True, name="batch-prefetch").start()
    while (item := slots.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def batch_plan(index: DialogueIndex, seed: int, batch_size: int, window: int, rank: int, world: int,
               start: int = 0, per_step: int | None = None) -> Iterator[tuple[int, list[int]]]:
    """Endless (epoch, batch) for one worker, from its own batch number `start` on (the batches every
    worker has taken: global batch `start * world + rank`). An epoch uses a whole number of optimizer
    steps (`per_step` micro-batches each, all workers together; the remainder is dropped), so every
    step sees the same batches however workers and gradient accumulation split it."""
    per_step = per_step or world
    epoch, seen = 0, 0
    while True:
        batches = index.epoch_batches(epoch, seed, batch_size, window)
        usable = len(batches) // per_step * per_step // world
        if usable == 0:
            raise ValueError(f"{len(batches)} batches per epoch cannot feed {world} workers "
                             f"({per_step} micro-batches per step)")
        for number in range(usable):
            if seen >= start:
                yield epoch, batches[number * world + rank]
            seen += 1
        epoch += 1


@dataclass(frozen=True)
class Rehearsal:
    """Corpus sentences added to every batch: dialogue numbers first..first+count of a joined index, `per_batch`
    of them drawn by the batch's own seed (a resumed run draws the same)."""

    first: int
    count: int
    per_batch: int

    def draw(self, rng: np.random.Generator) -> list[int]:
        return (self.first + rng.choice(self.count, min(self.per_batch, self.count), replace=False)).tolist()


class BatchMaker:
    """Reads the user turns' audio for a batch and turns dialogues into a StageBatch."""

    def __init__(self, store: ArtifactStore, index: DialogueIndex, chat: ChatFormat, n_mels: int,
                 augment: AugmentConfig, seed: int, with_speech: bool = True,
                 unit_vocab_size: int | None = None, unit_rate: float | None = None,
                 pronounce: Pronounce | None = None, rehearsal: Rehearsal | None = None) -> None:
        self.store, self.index, self.chat = store, index, chat
        self.mel = WhisperLogMel(n_mels)
        self.augment, self.seed, self.with_speech = augment, seed, with_speech
        self.unit_vocab_size = unit_vocab_size  # None: the batches' units are not read by a TTS LM (no noise)
        self.unit_rate = unit_rate  # units per second: each text token's units are counted (aligned read-write)
        self.pronounce = pronounce  # each text token's phonemes (a TTS LM that reads pronunciations)
        self.rehearsal = rehearsal
        self._shards: OrderedDict[int, dict[str, bytes]] = OrderedDict()
        self._texts: dict[int, tuple] = {}  # dialogue number -> its token tensors (they never change)

    def _audio(self, turn: StoredTurn) -> bytes:
        if turn.shard not in self._shards:
            table = self.store.read_shard(self.index.shard_paths[turn.shard], ["utterance_id", "audio"])
            rows = zip(*table.to_pydict().values())  # answers may have no audio (imported sets): only users' is read
            self._shards[turn.shard] = {u: a["bytes"] for u, a in rows if a is not None}
            while len(self._shards) > SHARDS_CACHED:
                self._shards.popitem(last=False)
        self._shards.move_to_end(turn.shard)
        return self._shards[turn.shard][turn.utterance_id]

    def _wave(self, turn: StoredTurn, rng: np.random.Generator) -> np.ndarray:
        wave, rate = decode_audio(self._audio(turn))
        if rate != self.mel.sample_rate:
            raise ValueError(f"{turn.utterance_id}: audio at {rate} Hz, the speech encoder needs {self.mel.sample_rate}")
        low, high = self.augment.speed
        if (low, high) != (1.0, 1.0):
            speed = round(rng.uniform(low, high) * SPEED_STEPS) / SPEED_STEPS  # short resampling filters
            wave = resample(wave, rate * speed, rate)
        if self.augment.noise_snr_db is not None:
            power = float(np.mean(wave ** 2)) + 1e-12
            noise = rng.normal(0, np.sqrt(power / 10 ** (self.augment.noise_snr_db / 10)), len(wave))
            wave = wave + noise.astype(np.float32)
        return wave

    def _tokens(self, number: int) -> tuple:
        if number not in self._texts:
            turns = self.index.dialogues[number].turns
            assistant = [t for t in turns if t.role == "assistant"]
            text_ids = [self.chat.text_ids(t.text) for t in assistant]
            self._texts[number] = (
                self.chat.encode([(t.role, t.text) for t in turns]),
                [torch.tensor(ids) for ids in text_ids],
                [torch.tensor(t.units if t.units is not None else [], dtype=torch.long) for t in assistant],
                None if self.unit_rate is None else
                [torch.tensor(unit_counts(self.chat, t, self.unit_rate)) for t in assistant],
                None if self.pronounce is None else [phoneme_rows(self.pronounce(ids, final=True)) for ids in text_ids])
        return self._texts[number]

    def stream(self, plan: Iterator[tuple[int, list[int]]], first: int, rank: int, world: int,
               ahead: int = PREFETCH_BATCHES) -> Iterator[tuple[int, StageBatch]]:
        """(epoch, batch) for this worker's consecutive micro-batches from number `first`, made on
        a background thread `ahead` batches ahead of the training step."""
        def produce() -> Iterator[tuple[int, StageBatch]]:
            for offset, (epoch, numbers) in enumerate(plan):
                yield epoch, self.make(numbers, (first + offset) * world + rank)
        return prefetch(produce(), ahead)

    def make(self, dialogue_numbers: list[int], batch_number: int) -> StageBatch:
        rng = np.random.default_rng([self.seed, batch_number])
        if self.rehearsal is not None:
            dialogue_numbers = dialogue_numbers + self.rehearsal.draw(rng)
        input_ids, labels, marks, text_ids, units, counts, phonemes, waves = [], [], [], [], [], [], [], []
        for number in dialogue_numbers:
            dialogue = self.index.dialogues[number]
            encoded, turn_text, turn_units, turn_counts, turn_phonemes = self._tokens(number)
            input_ids.append(encoded.input_ids)
            labels.append(encoded.labels)
            marks.append(encoded.turn_marks)
            text_ids += turn_text
            units += turn_units
            counts += turn_counts or []
            phonemes += turn_phonemes or []
            if self.with_speech:
                waves += [self._wave(turn, rng) for turn in dialogue.turns if turn.role == "user"]
        features = lengths = None
        if waves:
            features, lengths = self.mel.batch([torch.from_numpy(w) for w in waves])
        return StageBatch(input_ids, labels, marks, features, lengths, text_ids, units, self._noised(units, rng),
                          counts if self.unit_rate is not None else None,
                          phonemes if self.pronounce is not None else None)

    def _noised(self, units: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor] | None:
        """The units as the TTS LM reads them: `augment.unit_noise` of them replaced by random units."""
        if self.unit_vocab_size is None or self.augment.unit_noise == 0:
            return None
        noised = []
        for turn in units:
            replace = torch.from_numpy(rng.random(len(turn)) < self.augment.unit_noise)
            random_units = torch.from_numpy(rng.integers(self.unit_vocab_size, size=len(turn)))
            noised.append(torch.where(replace, random_units, turn))
        return noised
