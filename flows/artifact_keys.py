"""Prefect artifact keys: the one way every flow names its summaries.

Prefect accepts only lowercase letters, digits and dashes, while artifact names may hold `_` and
`.` (and a user may type capitals). A key is the flow's word and the dataset/model name, lowered,
with every other character turned into a dash; when that changed the name, a short hash of the
original follows, so `demo_v2` and `demo.v2` never share (and overwrite) one key.
"""

from __future__ import annotations

import re

from omniforge.hashing import stable_hash

_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    return _NOT_ALLOWED.sub("-", text.lower()).strip("-")


def artifact_key(flow: str, name: str, *detail: str) -> str:
    """Key of `flow`'s artifact about `name` (then e.g. the training stage): always valid for Prefect."""
    slug = _slug(name)
    if slug != name:
        slug = f"{slug}-{stable_hash(name, length=6)}".strip("-")
    return "-".join(part for part in (_slug(flow), slug, *map(_slug, detail)) if part)
