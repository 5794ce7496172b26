"""Versioned artifacts (datasets, units, checkpoints, evals) on any fsspec storage."""

from omniforge.storage.fs import StoreUnavailable
from omniforge.storage.manifest import FileEntry, Manifest, ParentEntry, ShardEntry, TableEntry
from omniforge.storage.names import ArtifactNameError, ArtifactRef, Kind
from omniforge.storage.store import ArtifactNotFound, ArtifactStore, VersionWriter, store_from_config

__all__ = [
    "ArtifactNameError", "ArtifactNotFound", "ArtifactRef", "ArtifactStore", "FileEntry", "Kind",
    "Manifest", "ParentEntry", "ShardEntry", "StoreUnavailable", "TableEntry", "VersionWriter", "store_from_config",
]
