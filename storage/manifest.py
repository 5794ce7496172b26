"""The manifest: the one file that makes a version exist. Written last, never changed."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from omniforge.storage.names import ArtifactRef, Kind

MANIFEST_FORMAT = 1


class FileEntry(BaseModel):
    """A stored file, by its path relative to the store root (it may belong to a parent version)."""

    path: str
    bytes: int
    sha256: str


class ShardEntry(FileEntry):
    rows: int


class TableEntry(BaseModel):
    """A Parquet table split in shards; `schema_fields` is the Arrow schema, one field a line."""

    schema_fields: list[dict[str, str]] = Field(default_factory=list)
    shards: list[ShardEntry] = Field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in self.schema_fields]

    def holds(self, schema: pa.Schema) -> bool:
        """Whether this table's shards have exactly `schema` (so new shards may join them)."""
        return self.schema_fields == schema_fields(schema)


def schema_fields(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


class ParentEntry(BaseModel):
    kind: Kind
    name: str
    version: int

    def ref(self) -> ArtifactRef:
        return ArtifactRef(self.kind, self.name, self.version)


class Manifest(BaseModel):
    format: int = MANIFEST_FORMAT
    kind: Kind
    name: str
    version: int
    tables: dict[str, TableEntry] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)
    parents: list[ParentEntry] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    code_version: str = ""
    flow_run_id: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def made_as(self, content_hash: str, config_hash: str) -> bool:
        """Whether this version already is this content made with this recipe (nothing new to publish)."""
        return self.stats.get("content_hash") == content_hash and self.config_hash == config_hash

    def ref(self) -> ArtifactRef:
        return ArtifactRef(self.kind, self.name, self.version)

    def all_files(self) -> list[FileEntry]:
        return [s for t in self.tables.values() for s in t.shards] + list(self.files.values())

    def parents_of(self, kind: Kind) -> list[ArtifactRef]:
        """The versions of one kind this one was made from, in lineage order."""
        return [p.ref() for p in self.parents if p.kind == kind]

    def parent_of(self, kind: Kind) -> ArtifactRef:
        """The one version of `kind` this one was made from; a clear error when there is none or several."""
        found = self.parents_of(kind)
        if len(found) != 1:
            raise ValueError(f"{self.ref()} has {len(found) or 'no'} {kind.value} version"
                             f"{'s' if len(found) > 1 else ''} among its parents; expected one")
        return found[0]
