"""Dialogue records: the one shape every source and eval set is parsed into, the one role table,
the one turn-order rule, the one parser of the JSON layouts people hold (ShareGPT, OpenAI and
LLaMA-Omni 2), and the rejects table's rows."""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import numpy as np

from omniforge.config.media import MediaConfig
from omniforge.errors import InputError
from omniforge.hashing import stable_hash
from omniforge.storage.audio import audio_seconds, encode_audio

Role = Literal["user", "assistant"]

ROLE_NAMES: dict[str, Role | None] = {
    "human": "user", "user": "user", "question": "user",
    "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "answer": "assistant",
    "system": None,  # system prompts are not spoken; they are dropped
}

# (turn list key, role key, text key) of each supported layout: ShareGPT, OpenAI, LLaMA-Omni 2
LAYOUTS = [("conversations", "from", "value"), ("messages", "role", "content"), ("conversation", "from", "text")]


@dataclass
class Turn:
    role: Role
    text: str
    audio: bytes | None = None  # speech the source already has (encoded), used as is
    answers: list[str] = field(default_factory=list)  # an answer's facts, scored in evaluation ("Paris")


@dataclass
class Dialogue:
    id: str
    turns: list[Turn]
    origin: str = ""  # where the record came from (file and line, dataset and row)
    answers: list[str] = field(default_factory=list)  # accepted answers to the last question (eval sets)

    def questions(self) -> list[tuple[Turn, list[str]]]:
        """Each user turn with the answers it is scored against: the facts of the assistant turn after
        it (its whole text when it names none), or, for the last question, the record's own
        `answers` when it has them."""
        pairs = []
        for index, turn in enumerate(self.turns):
            if turn.role != "user":
                continue
            following = self.turns[index + 1:index + 2]
            last = not any(t.role == "user" for t in self.turns[index + 1:])
            if last and self.answers:
                pairs.append((turn, list(self.answers)))
            else:
                pairs.append((turn, [a for t in following if t.role == "assistant" for a in (t.answers or [t.text])]))
        return pairs


@dataclass
class Reject:
    """One record or dialogue left out of the dataset, and why (reason is a short code)."""

    record: str
    field: str
    reason: str
    detail: str = ""

    def as_row(self) -> dict[str, str]:
        return {"record": self.record, "field": self.field, "reason": self.reason, "detail": self.detail}


class RecordError(ValueError):
    """A source record that cannot become a dialogue; names the field at fault."""

    def __init__(self, field_name: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{field_name}: {reason}{': ' + detail if detail else ''}")
        self.field = field_name
        self.reason = reason
        self.detail = detail


@dataclass
class SourceBatch:
    dialogues: list[Dialogue] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    description: dict = field(default_factory=dict)
    _ids: set[str] = field(default_factory=set, repr=False)

    def add(self, dialogue: Dialogue) -> bool:
        """Keep `dialogue` unless one with its id is already in; returns whether it was kept."""
        if dialogue.id in self._ids:
            return False
        self._ids.add(dialogue.id)
        self.dialogues.append(dialogue)
        return True


def turn_order_problem(roles: list[Role]) -> tuple[int, str] | None:
    """The first turn that breaks the dialogue order (the user first, then user and assistant
    alternating) and why; None when the order is right."""
    for index, role in enumerate(roles):
        if index == 0 and role != "user":
            return 0, "the dialogue must start with the user"
        if index and role == roles[index - 1]:
            return index, f"two {role} turns in a row"
    return None


def role_of(value: Any, where: str) -> Role | None:
    """A turn's role from any of the names the layouts use (None: a system turn, not spoken)."""
    name = str(value if value is not None else "").strip().lower()
    if name not in ROLE_NAMES:
        raise RecordError(where, "unknown_role", repr(value))
    return ROLE_NAMES[name]


def parse_record(record: Any, origin: str, media: MediaRoots | None = None, answered_only: bool = True) -> Dialogue:
    """One record in any supported layout -> a Dialogue; raises RecordError naming the field.
    `answered_only` drops a last question without an answer (it teaches nothing); eval sets keep
    it and score it against the record's `answer`/`answers`. `media`: where wav paths may be read
    (`media_roots`; None: a record naming a path is a reject)."""
    if not isinstance(record, dict):
        raise RecordError("<record>", "malformed_record", f"expected an object, got {type(record).__name__}")
    layout = next((l for l in LAYOUTS if l[0] in record), None)
    if layout is None:
        raise RecordError("<record>", "unknown_layout", "no 'conversations', 'messages' or 'conversation' list")
    list_key, role_key, text_key = layout
    items = record[list_key]
    if not isinstance(items, list):
        raise RecordError(list_key, "malformed_record", "must be a list")
    turns: list[Turn] = []
    places: list[str] = []
    for i, item in enumerate(items):
        where = f"{list_key}[{i}]"
        if not isinstance(item, dict):
            raise RecordError(where, "malformed_record", "each turn must be an object")
        role = role_of(item.get(role_key), f"{where}.{role_key}")
        if role is None:
            continue
        text = item.get(text_key, "")
        audio = _speech(item.get("speech"), f"{where}.speech", media)
        if not isinstance(text, str) or not (text.strip() or audio):  # spoken questions may come without text
            raise RecordError(f"{where}.{text_key}", "empty_turn")
        turns.append(Turn(role, text.strip(), audio, _answers(item)))
        places.append(f"{where}.{role_key}")
    problem = turn_order_problem([t.role for t in turns])
    if problem is not None:
        raise RecordError(places[problem[0]], "bad_turn_order", problem[1])
    if answered_only and turns and turns[-1].role == "user":
        turns.pop()
    if not turns:
        raise RecordError(list_key, "no_turns", "no user/assistant pair" if answered_only else "no user turn")
    dialogue_id = str(record.get("id") or stable_hash([[t.role, t.text] for t in turns]))
    return Dialogue(dialogue_id, turns, origin, _answers(record))


def _answers(record: dict) -> list[str]:
    """A record's (or a turn's) accepted answers: `answers` (a list or one string) or `answer`."""
    answers = record.get("answers", record.get("answer"))
    if isinstance(answers, str):
        return [answers]
    return [str(a) for a in answers] if isinstance(answers, list) else []


def read_jsonl(path: str, max_record_bytes: int = MediaConfig().max_record_bytes,
               storage_options: dict | None = None) -> Iterable[tuple[str, Any]]:
    """(origin, record) per non-blank line; a line that is not UTF-8, not JSON or longer than
    `max_record_bytes` comes as a RecordError for that line, so one bad line never stops the others
    (and no line is held whole past the cap)."""
    with fsspec.open(path, "rb", **(storage_options or {})) as handle:
        for number, raw in enumerate(_bounded_lines(handle, max_record_bytes), start=1):
            origin = f"line {number}"
            if raw is None:
                yield origin, RecordError("<line>", "record_too_long", f"over {max_record_bytes} bytes "
                                                                       "(media.max_record_bytes)")
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield origin, RecordError("<line>", "bad_encoding", f"not UTF-8 at byte {err.start} "
                                                                    f"({raw[err.start:err.start + 4]!r})")
                continue
            if not line.strip():
                continue
            try:
                yield origin, json.loads(line)
            except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
                yield origin, RecordError("<json>", "malformed_json", str(err)[:200])


@dataclass(frozen=True)
class MediaRoots:
    """Where a source's records may point for media: `dirs` (local folders or URL prefixes), with the
    limits of `MediaConfig`."""

    dirs: tuple[str, ...]
    limits: MediaConfig = field(default_factory=MediaConfig)


def _bounded_lines(handle, limit: int) -> Iterator[bytes | None]:
    """Each line of a binary file, or None for a line longer than `limit` (read past in chunks)."""
    while raw := handle.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := handle.readline(limit)) and not rest.endswith(b"\n"):
            pass
        yield None


def media_roots(source_file: str | None, limits: MediaConfig, root: str | None = None) -> MediaRoots:
    """Where a layout's relative media paths are looked up, in order, and the only places media is
    read from: the folder of the file that names them, then `root` (default: the working directory,
    where LLaMA-Omni 2's and VocalNet's scripts run, so their repositories write paths relative to
    their root)."""
    dirs = [posixpath.dirname(source_file) or "."] if source_file else []
    return MediaRoots(tuple(dirs + [root or os.getcwd()]), limits)


class MediaNotFound(InputError, OSError):
    """A media file found in none of the places tried; the message lists them."""


class MediaRefused(InputError, ValueError):
    """A media path a record may not make us read; `reason` is a short code for the rejects table."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_media(path: str, roots: MediaRoots) -> bytes:
    """A media file's bytes: a relative path from the first of `roots.dirs` that holds it, an absolute
    path or URL as is; each only when it lies under one of the dirs (URLs anywhere only when allowed),
    is a regular file and is at most `max_bytes`, and, when it is audio, lasts at most `max_audio_seconds`
    by its header. Raises MediaRefused, or MediaNotFound."""
    remote = "://" in path or "::" in path
    anywhere = remote and roots.limits.allow_urls
    if remote and not anywhere and not any(_under(path, d) for d in roots.dirs):
        raise MediaRefused("media_url_refused", f"{path}: media at URLs is read only with media.allow_urls")
    candidates = [path] if remote or path.startswith("/") else [posixpath.join(d, path) for d in roots.dirs]
    for candidate in dict.fromkeys(_normal(c) for c in candidates):  # what is checked is what is read
        if not anywhere and not any(_under(candidate, d) for d in roots.dirs):
            raise MediaRefused("media_outside_roots", f"{path} is outside {', '.join(roots.dirs)}")
        fs, location = fsspec.core.url_to_fs(candidate)
        try:
            info = fs.info(location)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if info.get("type") != "file":
            raise MediaRefused("media_not_a_file", f"{path} is a {info.get('type')} (a directory, device or "
                                                   "pipe), not a regular file")
        limit = roots.limits.max_bytes
        if int(info.get("size") or 0) > limit:
            raise MediaRefused("media_too_large", f"{path} has {info['size']} bytes (media.max_bytes {limit})")
        with fs.open(location, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:  # it grew after the check, or its size was not known
            raise MediaRefused("media_too_large", f"{path} is over media.max_bytes {limit}")
        seconds = audio_seconds(data)  # None: not audio (a token file) or unreadable, which its reader says
        if seconds is not None and seconds > roots.limits.max_audio_seconds:
            raise MediaRefused("media_too_long", f"{path} lasts {seconds:.0f} s (media.max_audio_seconds "
                                                 f"{roots.limits.max_audio_seconds:g})")
        return data
    raise MediaNotFound(f"{path} not found (tried {', '.join(dict.fromkeys(candidates))})")


def _under(path: str, folder: str) -> bool:
    """Whether `path` lies in `folder`, lexically: `..` is resolved, symlinks are not (the folders
    and their links are the user's; only what a record says is distrusted)."""
    path, folder = _normal(path), _normal(folder).rstrip("/")
    return path == folder or path.startswith(folder + "/")


def _normal(path: str) -> str:
    """`path` absolute with `..` and `.` resolved as text (a URL's path part likewise)."""
    if "::" in path:  # a chained URL: left as it is (only read when URLs are allowed)
        return path
    if "://" in path:
        protocol, rest = path.split("://", 1)
        return f"{protocol}://{posixpath.normpath(rest)}"
    return os.path.abspath(os.path.expanduser(path))


def _speech(value: Any, where: str, media: MediaRoots | None) -> bytes | None:
    """Existing speech of a turn: a wav path (see `read_media`), an HF audio dict with bytes, or an
    HF decoded dict with an array."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, str):
            if media is None:
                raise MediaRefused("media_outside_roots", f"{value}: this source reads no media files")
            return read_media(value, media)
        if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)) and value["bytes"]:
            return bytes(value["bytes"])
        if isinstance(value, dict) and value.get("array") is not None:
            return encode_audio(np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]))
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            return _speech(value["path"], where, media)
    except MediaRefused as err:
        raise RecordError(where, err.reason, err.detail) from err
    except (OSError, KeyError, ValueError, TypeError, OverflowError, ImportError, RuntimeError) as err:
        # a bad path, URL protocol, byte string, array or rate; soundfile raises several types
        raise RecordError(where, "missing_audio", str(err)) from err
    raise RecordError(where, "missing_audio", f"unrecognized speech value {type(value).__name__}")
