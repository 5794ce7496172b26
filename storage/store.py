"""Versioned artifacts on any fsspec URL.

Layout under the store root:
    {kind}/{name}/data/{writer-id}/...      files a writer wrote (shards, checkpoint files)
    {kind}/{name}/v{000001}/manifest.json   the version; exists only once everything above is written

A version becomes visible when its manifest is created with put-if-absent, so readers never see a
partial version, a killed writer leaves only unreferenced files, and two concurrent writers get
different version numbers. A manifest may list files of its parents, so incremental versions copy
nothing.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from omniforge.errors import InputError
from omniforge.hashing import sha256_bytes, sha256_stream
from omniforge.storage.code_version import code_version
from omniforge.storage.fs import StoreUnavailable, join, open_root, put_if_absent
from omniforge.storage.manifest import FileEntry, Manifest, ParentEntry, ShardEntry, TableEntry, schema_fields
from omniforge.storage.names import ArtifactRef, Kind, check_kind, check_name

MAX_PUBLISH_ATTEMPTS = 50


def read_parquet_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """Parse a Parquet file held in memory with the synchronous reader. (pq.read_table's dataset
    scanner frees Python-owned buffers on its own threads, which can abort the interpreter at exit.)"""
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns)


class ArtifactNotFound(InputError, LookupError):
    pass


class ArtifactStore:
    """Reads and writes versions; cheap to build, safe to share between threads and processes."""

    def __init__(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        rows_per_shard: int = 500,
        rows_per_row_group: int = 32,
    ) -> None:
        self.url = url
        self.options = dict(options or {})
        self.fs, self.root = open_root(url, self.options)
        self.rows_per_shard = rows_per_shard
        self.rows_per_row_group = rows_per_row_group

    def probe(self) -> None:
        """Reach the store once, so an unreachable one fails here with one clear line."""
        try:
            self.fs.exists(self.root)
        except Exception as err:  # noqa: BLE001 - each backend raises its own connection errors
            raise StoreUnavailable(f"cannot reach the store {self.url}: {type(err).__name__}: {err}") from err

    # ---------------------------------------------------------------- paths
    def path(self, relative: str) -> str:
        return join(self.root, relative)

    def uri(self, relative: str) -> str:
        """Full URL of a stored file, for other readers (HF datasets, DuckDB, Ray Data)."""
        return self.fs.unstrip_protocol(self.path(relative))

    @staticmethod
    def _manifest_rel(kind: Kind, name: str, version: int) -> str:
        return f"{kind.value}/{name}/v{version:06d}/manifest.json"

    # ---------------------------------------------------------------- reading
    def names(self, kind: str | Kind | None = None) -> list[ArtifactRef]:
        kinds = [check_kind(kind)] if kind else list(Kind)
        found = []
        for k in kinds:
            base = self.path(k.value)
            self.fs.invalidate_cache(base)
            if not self.fs.exists(base):
                continue
            for entry in sorted(self.fs.ls(base, detail=False)):
                name = entry.rstrip("/").rsplit("/", 1)[-1]
                if self.versions(k, name):
                    found.append(ArtifactRef(k, name))
        return found

    def versions(self, kind: str | Kind, name: str) -> list[int]:
        kind, name = check_kind(kind), check_name(name)
        base = self.path(f"{kind.value}/{name}")
        self.fs.invalidate_cache(base)  # object stores cache listings; another writer may have published
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        numbers = []
        for entry in entries:
            leaf = entry.rstrip("/").rsplit("/", 1)[-1]
            if leaf.startswith("v") and leaf[1:].isdigit():
                if self.fs.exists(self.path(self._manifest_rel(kind, name, int(leaf[1:])))):
                    numbers.append(int(leaf[1:]))
        return sorted(numbers)

    def latest(self, kind: str | Kind, name: str) -> int | None:
        found = self.versions(kind, name)
        return found[-1] if found else None

    def latest_manifest(self, kind: str | Kind, name: str) -> Manifest | None:
        version = self.latest(kind, name)
        return None if version is None else self.manifest(ArtifactRef(check_kind(kind), name, version))

    def newest_first(self, kind: str | Kind, name: str) -> Iterator[Manifest]:
        """The manifests of kind/name's versions, newest first (read one at a time, as asked)."""
        for version in reversed(self.versions(kind, name)):
            yield self.manifest(ArtifactRef(check_kind(kind), name, version))

    def find_version(self, kind: str | Kind, name: str, config_hash: str) -> Manifest | None:
        """The newest version made with this config hash (reuse instead of remaking it)."""
        return next((m for m in self.newest_first(kind, name) if m.config_hash == config_hash), None)

    def resolve(self, ref: ArtifactRef | str) -> ArtifactRef:
        ref = ArtifactRef.parse(ref) if isinstance(ref, str) else ref
        if ref.version is not None:
            return ref
        latest = self.latest(ref.kind, ref.name)
        if latest is None:
            raise ArtifactNotFound(f"no versions of {ref} in {self.url}")
        return ArtifactRef(ref.kind, ref.name, latest)

    def manifest(self, ref: ArtifactRef | str) -> Manifest:
        ref = self.resolve(ref)
        path = self.path(self._manifest_rel(ref.kind, ref.name, ref.version))
        try:
            text = self.fs.cat_file(path)
        except FileNotFoundError:
            raise ArtifactNotFound(f"{ref} does not exist in {self.url}") from None
        return Manifest.model_validate_json(text)

    def describe(self, relative: str) -> FileEntry:
        """The manifest entry of a file written into the store by others (read back, streamed)."""
        with self.fs.open(self.path(relative), "rb") as stream:
            digest = sha256_stream(stream)
        return FileEntry(path=relative, bytes=self.fs.size(self.path(relative)), sha256=digest)

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.path(relative))

    def shard_uris(self, manifest: Manifest, table: str = "data") -> list[str]:
        return [self.uri(s.path) for s in self._table(manifest, table).shards]

    def read_table(self, manifest: Manifest, table: str = "data", columns: list[str] | None = None) -> pa.Table:
        entry = self._table(manifest, table)
        parts = [self.read_shard(s.path, columns) for s in entry.shards]
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts)

    def iter_batches(
        self, manifest: Manifest, table: str = "data", columns: list[str] | None = None, batch_size: int = 64
    ) -> Iterator[pa.RecordBatch]:
        """Stream a table shard by shard, so a large dataset never sits in memory whole."""
        for shard in self._table(manifest, table).shards:
            reader = pq.ParquetFile(pa.BufferReader(self.fs.cat_file(self.path(shard.path))))
            yield from reader.iter_batches(batch_size=batch_size, columns=columns)

    def read_shard(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        return read_parquet_bytes(self.fs.cat_file(self.path(relative)), columns)

    @staticmethod
    def _table(manifest: Manifest, table: str) -> TableEntry:
        if table not in manifest.tables:
            raise ArtifactNotFound(f"{manifest.ref()} has no table {table!r} (has: {sorted(manifest.tables)})")
        return manifest.tables[table]

    # ---------------------------------------------------------------- writing
    def writer(
        self,
        kind: str | Kind,
        name: str,
        *,
        parents: list[Manifest | ArtifactRef] | None = None,
        config: dict[str, Any] | None = None,
        config_hash: str = "",
        flow_run_id: str | None = None,
    ) -> "VersionWriter":
        return VersionWriter(self, check_kind(kind), check_name(name), parents or [], config or {},
                             config_hash, flow_run_id)

    def publish(self, manifest: Manifest) -> Manifest:
        """Give `manifest` the next free version number and create it atomically."""
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            manifest.version = (self.latest(manifest.kind, manifest.name) or 0) + 1
            rel = self._manifest_rel(manifest.kind, manifest.name, manifest.version)
            if put_if_absent(self.fs, self.path(rel), manifest.model_dump_json(indent=2).encode()):
                return manifest
        raise RuntimeError(f"could not publish {manifest.kind.value}/{manifest.name}: "
                           f"{MAX_PUBLISH_ATTEMPTS} concurrent publishers won first")

    # ---------------------------------------------------------------- checking
    def verify(self, ref: ArtifactRef | str) -> list[str]:
        """Re-hash every file of a version; return one line per missing or corrupted file."""
        manifest = self.manifest(ref)
        problems = []
        for entry in manifest.all_files():
            try:
                data = self.read_bytes(entry.path)
            except FileNotFoundError:
                problems.append(f"missing: {entry.path}")
                continue
            if len(data) != entry.bytes or sha256_bytes(data) != entry.sha256:
                problems.append(f"corrupted: {entry.path} (sha256 or size differs from the manifest)")
        return problems

    def lineage(self, ref: ArtifactRef | str) -> dict[str, Any]:
        """The version and, recursively, the versions it was made from."""
        manifest = self.manifest(ref)
        return {
            "ref": str(manifest.ref()),
            "created_at": manifest.created_at,
            "parents": [self.lineage(p.ref()) for p in manifest.parents],
        }


class VersionWriter:
    """Collects the files of one new version, then publishes its manifest (last)."""

    def __init__(
        self,
        store: ArtifactStore,
        kind: Kind,
        name: str,
        parents: list[Manifest | ArtifactRef],
        config: dict[str, Any],
        config_hash: str,
        flow_run_id: str | None,
    ) -> None:
        self.store = store
        self.data_dir = f"{kind.value}/{name}/data/{uuid.uuid4().hex}"
        self.manifest = Manifest(
            kind=kind, name=name, version=0,
            parents=[self._parent(store, p) for p in parents],
            config=config, config_hash=config_hash, code_version=code_version(),
            flow_run_id=flow_run_id,
        )
        self._waiting: dict[str, pa.Table] = {}  # rows `append` holds back until a shard is full

    @staticmethod
    def _parent(store: ArtifactStore, parent: Manifest | ArtifactRef) -> ParentEntry:
        ref = parent.ref() if isinstance(parent, Manifest) else store.resolve(parent)
        return ParentEntry(kind=ref.kind, name=ref.name, version=ref.version)

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.stats

    def _target(self, filename: str) -> str:
        """The store-relative path of one of this version's files, its folder made."""
        relative = f"{self.data_dir}/{filename}"
        self.store.fs.makedirs(self.store.path(relative.rsplit("/", 1)[0]), exist_ok=True)
        return relative

    def _put(self, filename: str, data: bytes) -> FileEntry:
        relative = self._target(filename)
        self.store.fs.pipe_file(self.store.path(relative), data)
        return FileEntry(path=relative, bytes=len(data), sha256=sha256_bytes(data))

    def write_table(self, table_name: str, table: pa.Table) -> None:
        """Append `table` to the version's table `table_name`, split into Parquet shards."""
        check_name(table_name)
        entry = self._table_entry(table_name, table.schema)
        step = self.store.rows_per_shard
        for start in range(0, max(table.num_rows, 1), step):
            chunk = table.slice(start, step)
            buffer = io.BytesIO()
            pq.write_table(chunk, buffer, row_group_size=self.store.rows_per_row_group)
            file = self._put(f"{table_name}-{len(entry.shards):05d}.parquet", buffer.getvalue())
            entry.shards.append(ShardEntry(**file.model_dump(), rows=chunk.num_rows))

    def append(self, table_name: str, table: pa.Table) -> None:
        """Append rows to `table_name` a full shard at a time: the rest waits for more rows (or `flush`,
        which `publish` calls), so rows added in small pieces still make full shards."""
        waiting = self._waiting.get(table_name)
        table = table if waiting is None else pa.concat_tables([waiting, table])
        full = table.num_rows - table.num_rows % self.store.rows_per_shard
        if full:
            self.write_table(table_name, table.slice(0, full))
        self._waiting[table_name] = table.slice(full)

    def flush(self) -> None:
        """Write the rows `append` holds back."""
        for table_name, table in self._waiting.items():
            if table.num_rows:
                self.write_table(table_name, table)
        self._waiting = {}

    def reuse_shards(self, table_name: str, source: Manifest, source_table: str | None = None,
                     first: bool = False) -> None:
        """Reference every shard of `source`'s table (a parent's) without copying it, after the shards
        written so far (`first`: before them)."""
        entry_from = self.store._table(source, source_table or table_name)
        entry = self.manifest.tables.setdefault(table_name, TableEntry(schema_fields=entry_from.schema_fields))
        if entry.schema_fields != entry_from.schema_fields:
            raise ValueError(f"table {table_name!r}: schema differs from {source.ref()}'s")
        reused = [s.model_copy() for s in entry_from.shards]
        entry.shards = reused + entry.shards if first else entry.shards + reused

    def ensure_table(self, table_name: str, schema: pa.Schema) -> None:
        """Give the version an (empty) table `table_name` when nothing was written to it."""
        self.flush()
        if table_name not in self.manifest.tables:
            self.write_table(table_name, schema.empty_table())

    def add_parents(self, parents: list[Manifest | ArtifactRef]) -> None:
        """Parents known only once the files are written (a version published meanwhile)."""
        self.manifest.parents.extend(self._parent(self.store, p) for p in parents)

    def discard(self) -> None:
        """Remove what was written, when the version turns out not to be needed."""
        self._waiting = {}
        path = self.store.path(self.data_dir)
        if self.store.fs.exists(path):
            self.store.fs.rm(path, recursive=True)

    def add_file(self, filename: str, data: bytes) -> None:
        self.manifest.files[filename] = self._put(filename, data)

    def add_local_file(self, filename: str, local: Path) -> None:
        """Copy a local file in, streamed (a model's weights never sit in memory twice)."""
        relative = self._target(filename)
        self.store.fs.put_file(str(local), self.store.path(relative))
        with open(local, "rb") as stream:
            digest = sha256_stream(stream)
        self.manifest.files[filename] = FileEntry(path=relative, bytes=local.stat().st_size, sha256=digest)

    def add_written(self, entries: dict[str, FileEntry]) -> None:
        """Files other processes wrote under `data_dir` (each worker's shards of a checkpoint)."""
        self.manifest.files.update(entries)

    def _table_entry(self, table_name: str, schema: pa.Schema) -> TableEntry:
        fields = schema_fields(schema)
        entry = self.manifest.tables.setdefault(table_name, TableEntry(schema_fields=fields))
        if entry.schema_fields != fields:
            raise ValueError(f"table {table_name!r}: schema differs from its earlier shards")
        return entry

    def publish(self) -> Manifest:
        self.flush()
        return self.store.publish(self.manifest)


def store_from_config(config: Any) -> ArtifactStore:
    """Open the store a `StoreConfig` describes, with its resolved credentials."""
    return ArtifactStore(config.url, config.storage_options(), config.rows_per_shard, config.rows_per_row_group)
