"""Artifact kinds, names and references (`kind/name@version`), validated before any I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from omniforge.errors import InputError


class Kind(str, Enum):
    """What an artifact holds; each kind has its own namespace in the store."""

    dialogues = "dialogues"
    speech = "speech"
    units = "units"
    tokenizer = "tokenizer"
    decoder = "decoder"
    checkpoint = "checkpoint"
    eval = "eval"


NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ArtifactNameError(InputError, ValueError):
    """An artifact kind, name or reference that cannot be used."""


def check_kind(kind: str | Kind) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in Kind)
        raise ArtifactNameError(f"unknown artifact kind {kind!r}; expected one of: {choices}") from None


def check_name(name: str) -> str:
    """Names become path parts, so only a safe alphabet is allowed (no '/', '..', spaces)."""
    if not isinstance(name, str) or not name:
        raise ArtifactNameError("artifact name is empty")
    if ".." in name or not NAME_PATTERN.match(name):
        raise ArtifactNameError(
            f"bad artifact name {name!r}: use 1-64 of a-z 0-9 . _ -, starting with a letter or "
            "digit, and no '..'"
        )
    return name


@dataclass(frozen=True)
class ArtifactRef:
    """Points at one version (or, with version None, the latest) of a named artifact."""

    kind: Kind
    name: str
    version: int | None = None

    def __str__(self) -> str:
        tail = f"@{self.version}" if self.version is not None else ""
        return f"{self.kind.value}/{self.name}{tail}"

    @classmethod
    def parse(cls, text: str) -> "ArtifactRef":
        """Parse `kind/name`, `kind/name@3` or `kind/name@v3`."""
        body, _, version_text = text.partition("@")
        kind_text, sep, name = body.partition("/")
        if not sep:
            raise ArtifactNameError(f"bad artifact reference {text!r}: expected kind/name[@version]")
        version = None
        if version_text:
            digits = version_text.removeprefix("v")
            if not digits.isdigit() or int(digits) < 1:
                raise ArtifactNameError(f"bad version {version_text!r} in {text!r}: expected a number >= 1")
            version = int(digits)
        return cls(check_kind(kind_text), check_name(name), version)
