"""When a new version may reference the previous version's shards instead of rewriting them."""

from __future__ import annotations

from omniforge.storage import ArtifactStore, Manifest


def unchanged_rows(store: ArtifactStore, previous: Manifest, wanted: dict[str, str]) -> set[str] | None:
    """The previous version's utterance ids if every one of its rows is still wanted with the same
    content key (so its shards can be referenced as they are); None if any row changed or left."""
    old = store.read_table(previous, columns=["utterance_id", "key"])
    ids, keys = old.column("utterance_id").to_pylist(), old.column("key").to_pylist()
    return set(ids) if all(wanted.get(u) == k for u, k in zip(ids, keys)) else None
