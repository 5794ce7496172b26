"""Stable content hashes: the same value hashes the same on every machine and Python run."""

from __future__ import annotations

import hashlib
import json
from typing import Any, BinaryIO


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 16) -> str:
    """Hex sha256 prefix of the canonical JSON of `value` (dicts, lists, scalars)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO) -> str:
    """The digest of a file read in chunks (never whole in memory)."""
    return hashlib.file_digest(stream, "sha256").hexdigest()
