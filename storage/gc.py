"""Files no version references: what a killed writer left under `{kind}/{name}/data/`.

A writer's files become part of a version only when its manifest is published, so files that no
manifest lists are either a dead writer's or a live writer's not yet published. Only the first
kind may go: a file is garbage when no manifest anywhere in the store lists it (a manifest may
list its parents' files, across names) and it is older than the grace period, which must be
longer than any writer runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from omniforge.storage.names import ArtifactRef, Kind, check_kind, check_name
from omniforge.storage.store import ArtifactStore


@dataclass(frozen=True)
class Garbage:
    path: str  # relative to the store's root
    bytes: int
    modified: datetime


def referenced_paths(store: ArtifactStore) -> set[str]:
    """Every file path any published manifest of the store lists."""
    paths = set()
    for ref in store.names():
        for version in store.versions(ref.kind, ref.name):
            manifest = store.manifest(ArtifactRef(ref.kind, ref.name, version))
            paths.update(entry.path for entry in manifest.all_files())
    return paths


def modified_at(info: dict[str, Any]) -> datetime | None:
    """A file's last change from an fsspec `info` (local and memory: mtime/created; S3:
    LastModified; GCS: updated); None when the backend does not say."""
    for key in ("mtime", "LastModified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, timezone.utc)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def find_garbage(store: ArtifactStore, grace: timedelta, kind: str | Kind | None = None,
                 name: str | None = None, now: datetime | None = None) -> list[Garbage]:
    """Unreferenced files under the data folders of `kind`/`name` (all when None), last changed
    more than `grace` ago. A file whose age the backend does not tell is kept."""
    kinds = [check_kind(kind)] if kind else list(Kind)
    cutoff = (now or datetime.now(timezone.utc)) - grace
    referenced = referenced_paths(store)
    found = []
    for k in kinds:
        names = [check_name(name)] if name else _names_on_disk(store, k)
        for n in names:
            base = store.path(f"{k.value}/{n}/data")
            store.fs.invalidate_cache(base)
            if not store.fs.exists(base):
                continue
            for full, info in sorted(store.fs.find(base, detail=True).items()):
                relative = full[len(store.root):].lstrip("/")
                changed = modified_at(info)
                if relative not in referenced and changed is not None and changed < cutoff:
                    found.append(Garbage(relative, int(info.get("size") or 0), changed))
    return found


def _names_on_disk(store: ArtifactStore, kind: Kind) -> list[str]:
    """Every name folder of a kind, published or not (a writer killed before its first version
    left only data)."""
    base = store.path(kind.value)
    store.fs.invalidate_cache(base)
    if not store.fs.exists(base):
        return []
    return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in store.fs.ls(base, detail=False))


def remove_garbage(store: ArtifactStore, garbage: list[Garbage]) -> int:
    """Delete the files; returns the bytes freed."""
    for item in garbage:
        store.fs.rm_file(store.path(item.path))
    return sum(item.bytes for item in garbage)
