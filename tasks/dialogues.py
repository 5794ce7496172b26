"""Dialogue records: the one shape every source is parsed into, and the rejects table's rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "assistant"]

ROLE_NAMES: dict[str, Role | None] = {
    "human": "user", "user": "user", "question": "user",
    "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "answer": "assistant",
    "system": None,  # system prompts are not spoken; they are dropped
}


@dataclass
class Turn:
    role: Role
    text: str
    audio: bytes | None = None  # speech the source already has (encoded), used as is


@dataclass
class Dialogue:
    id: str
    turns: list[Turn]
    origin: str = ""  # where the record came from (file and line, dataset and row)


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
