"""Load text dialogues from JSONL (ShareGPT, OpenAI and LLaMA-Omni 2 layouts), a Hugging Face
dataset, or the built-in demo generator. A bad record becomes a reject naming its field."""

from __future__ import annotations

import math
import posixpath
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import fsspec

from omniforge.config.build import DemoSourceConfig, SourceConfig
from omniforge.config.corpus import CorpusSourceConfig
from omniforge.hashing import stable_hash
from omniforge.storage import ArtifactRef, ArtifactStore
from omniforge.storage.schemas import GENERATED_DIALOGUES_FILE
from omniforge.tasks.build.demo_facts import ANSWERS, CORPUS_TEMPLATES, COUNTRIES, FOLLOW_UPS, QUESTIONS
from omniforge.tasks.build.english_text import english_sentences
from omniforge.tasks.common.records import (Dialogue, MediaRoots, RecordError, Reject, SourceBatch, Turn, media_roots,
                                            parse_record, read_jsonl)


class SourceStream:
    """A source's dialogues read one record at a time (a source of any size passes through in bounded
    memory): bad records become `rejects` as they are met, a repeated id is a reject, and
    `description["records"]` counts what was read once the stream is exhausted."""

    def __init__(self, records: Callable[[], Iterable[tuple[str, Any]]], media: MediaRoots | None = None,
                 answered_only: bool = True, description: dict | None = None, limit: int | None = None,
                 seed: int = 0) -> None:
        self.records, self.media, self.answered_only = records, media, answered_only
        self.limit, self.seed = limit, seed
        self.description = dict(description or {})
        self.rejects: list[Reject] = []

    def _chosen(self) -> Iterator[tuple[str, Any]]:
        """The records, capped reproducibly at `limit` (a seeded sample, original order kept: one pass to
        count, one to read)."""
        if self.limit is None:
            yield from self.records()
            return
        total = sum(1 for _ in self.records())
        if total <= self.limit:
            yield from self.records()
            return
        keep = set(random.Random(self.seed).sample(range(total), self.limit))
        yield from (record for index, record in enumerate(self.records()) if index in keep)

    def __iter__(self) -> Iterator[Dialogue]:
        seen: set[str] = set()
        read = 0
        for origin, record in self._chosen():
            read += 1
            try:
                if isinstance(record, RecordError):  # the reader could not even parse it
                    raise record
                dialogue = parse_record(record, origin, self.media, self.answered_only)
            except RecordError as err:
                self.rejects.append(Reject(_record_name(origin, record), err.field, err.reason, err.detail))
                continue
            if dialogue.id in seen:
                self.rejects.append(Reject(dialogue.id, "id", "duplicate_id", origin))
                continue
            seen.add(dialogue.id)
            yield dialogue
        self.description["records"] = read

    def batch(self) -> SourceBatch:
        """The whole stream in memory."""
        dialogues = list(self)
        return SourceBatch(dialogues, self.rejects, self.description, {d.id for d in dialogues})


def parse_records(records: Iterable[tuple[str, Any]], media: MediaRoots | None = None,
                  answered_only: bool = True) -> SourceBatch:
    """All of `records` as dialogues and rejects, in memory (eval sets, tests, small sources)."""
    return SourceStream(lambda: records, media, answered_only).batch()


def _record_name(origin: str, record: Any) -> str:
    record_id = record.get("id") if isinstance(record, dict) else None
    return f"{str(record_id)[:80]} ({origin})" if record_id not in (None, "") else origin


def read_hf(config: SourceConfig | CorpusSourceConfig) -> Iterable[tuple[str, Any]]:
    import datasets

    fs, path = fsspec.core.url_to_fs(config.path)
    if fs.exists(posixpath.join(path, "dataset_info.json")) or fs.exists(posixpath.join(path, "state.json")):
        data = datasets.load_from_disk(config.path)
        data = data[config.hf_split] if isinstance(data, datasets.DatasetDict) else data
    else:  # a hub name (needs access) or a folder of data files
        data = datasets.load_dataset(config.path, config.hf_config, split=config.hf_split)
    for column, feature in data.features.items():
        if isinstance(feature, datasets.Audio):
            data = data.cast_column(column, datasets.Audio(decode=False))
    for index, row in enumerate(data):
        yield f"row {index}", row


def demo_dialogues(config: DemoSourceConfig, seed: int) -> list[dict]:
    """Closed-domain QA dialogues from the facts tables. Dialogue i depends only on (seed, i), so
    asking for more dialogues keeps the earlier ones identical (incremental builds stay small).
    Every run of len(COUNTRIES) x len(QUESTIONS) consecutive dialogues opens with each (country,
    topic) once, so a small build already covers every fact a model is asked about."""
    records = []
    slots = len(COUNTRIES) * len(QUESTIONS)
    stride = next(n for n in range(7, slots) if math.gcd(n, slots) == 1)  # i -> slot is a permutation
    shift = random.Random(seed).randrange(slots)
    for index in range(config.dialogues):
        rng = random.Random(f"{seed}-{index}")
        slot = (index * stride + shift) % slots
        country, capital, currency, language = COUNTRIES[slot % len(COUNTRIES)]
        facts = {"country": country, "capital": capital, "currency": currency, "language": language}
        first = list(QUESTIONS)[slot // len(COUNTRIES)]
        others = rng.sample([t for t in QUESTIONS if t != first], k=rng.randint(1, config.max_user_turns) - 1)
        topics = [first] + others
        conversation = []
        for turn, topic in enumerate(topics):
            question = rng.choice(QUESTIONS[topic]) if turn == 0 else FOLLOW_UPS[topic]
            conversation += [{"from": "human", "value": question.format(**facts)},
                             {"from": "gpt", "value": ANSWERS[topic].format(**facts), "answers": [facts[topic]]}]
        records.append({"id": f"demo-{seed}-{index:05d}", "conversations": conversation})
    return records


def demo_sentences(count: int, seed: int) -> list[str]:
    """Varied sentences over the demo's facts, for the TTS corpus. Sentence i depends only on
    (seed, i), so a larger corpus keeps the smaller one's sentences (incremental builds)."""
    sentences = []
    for index in range(count):
        rng = random.Random(f"corpus-{seed}-{index}")
        (country, capital, currency, language), other = rng.sample(COUNTRIES, 2)
        sentences.append(rng.choice(CORPUS_TEMPLATES).format(
            country=country, capital=capital, currency=currency, language=language, other_country=other[0],
            other_capital=other[1], other_currency=other[2], other_language=other[3]))
    return sentences


def load_corpus_source(config: CorpusSourceConfig) -> SourceBatch:
    """The TTS corpus's text as one-turn records spoken by the assistant; a record without text in
    `text_field` is a reject naming it."""
    if config.kind in ("english", "demo"):
        sentences = (english_sentences(config.sentences, config.seed, *config.words) if config.kind == "english"
                     else demo_sentences(config.sentences, config.seed))
        records = [(f"sentence {i}", {config.text_field: s}) for i, s in enumerate(sentences)]
    elif config.kind == "jsonl":
        records = list(read_jsonl(config.path))
    elif config.kind == "hf":
        records = list(read_hf(config))
    else:
        records = []
    batch = SourceBatch(description={"kind": config.kind, "path": config.path, "records": len(records)})
    for origin, record in records[: config.limit]:
        text = record.get(config.text_field) if isinstance(record, dict) else None
        if isinstance(record, RecordError):
            batch.rejects.append(Reject(origin, record.field, record.reason, record.detail))
        elif not isinstance(text, str) or not text.strip():
            batch.rejects.append(Reject(origin, config.text_field, "empty_turn", repr(text)[:80]))
        else:
            add_spoken_text(batch, text, origin)
    return batch


def add_spoken_text(batch: SourceBatch, text: str, origin: str) -> None:
    """One utterance for the assistant to say, keyed by its text (a sentence given twice is said once)."""
    batch.add(Dialogue(f"tts-{stable_hash(text.strip())}", [Turn("assistant", text.strip())], origin))


def open_source(config: SourceConfig, store: ArtifactStore | None = None, answered_only: bool = True) -> SourceStream:
    """The configured source as a stream, capped reproducibly (`limit`: a seeded sample, original order
    kept). `store`: where `generated` dialogues are; `answered_only` False keeps records that end with a
    question (instructions)."""
    path = config.path
    if config.kind == "demo":
        def records():
            return ((f"demo {i}", r) for i, r in enumerate(demo_dialogues(config.demo, config.seed)))
        media = None
    elif config.kind == "jsonl":
        def records():
            return read_jsonl(config.path, config.media.max_record_bytes)
        media = media_roots(config.path, config.media, config.root)
    elif config.kind == "generated":
        if store is None:
            raise ValueError("generated dialogues are read from a store")
        manifest = store.manifest(store.resolve(ArtifactRef.parse(config.path)))
        path, url = str(manifest.ref()), store.uri(manifest.files[GENERATED_DIALOGUES_FILE].path)

        def records():
            return read_jsonl(url, config.media.max_record_bytes, store.options)
        media = None
    else:
        def records():
            return read_hf(config)
        media = media_roots(None, config.media, config.root)
    description = {"kind": config.kind, "path": path, "limit": config.limit, "seed": config.seed}
    return SourceStream(records, media, answered_only, description, config.limit, config.seed)


def load_source(config: SourceConfig, store: ArtifactStore | None = None, answered_only: bool = True) -> SourceBatch:
    """`open_source`, read whole into memory (instructions to generate from, tests, small sources)."""
    return open_source(config, store, answered_only).batch()
