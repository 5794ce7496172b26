"""Finished results (synthesized utterances, generated dialogues), keyed by content hash, kept as
Parquet shards under the store.

The cache is what makes builds resumable and incremental: the driver flushes a shard every few
dozen results, each shard appears atomically (put-if-absent of a complete file), and a later run
skips every key already there. Failures are cached too (with their reason): a text the engine
cannot say, or an instruction the generator refuses, is not retried on every run.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from omniforge.storage import ArtifactStore
from omniforge.storage.store import read_parquet_bytes
from omniforge.storage.fs import join, open_root, put_if_absent
log = logging.getLogger(__name__)


class ResultCache:
    """Rows of `schema` (with a `key` column) in shards under `url`."""

    def __init__(self, url: str, schema: pa.Schema, options: dict | None = None, flush_every: int = 64) -> None:
        self.fs, self.root = open_root(url, options)
        self.schema, self.flush_every = schema, flush_every
        self._pending: list[dict] = []

    @classmethod
    def for_store(cls, store: ArtifactStore, url: str | None, namespace: str, schema: pa.Schema,
                  flush_every: int) -> "ResultCache":
        """The cache at `url`, or by default beside the store's artifacts under cache/NAMESPACE."""
        return cls(url or store.uri(f"cache/{namespace}"), schema, store.options, flush_every)

    def _shards(self) -> list[str]:
        self.fs.invalidate_cache(self.root)
        try:
            return sorted(p for p in self.fs.ls(self.root, detail=False) if p.endswith(".parquet"))
        except FileNotFoundError:
            return []

    def _read(self, path: str, columns: list[str] | None = None) -> pa.Table | None:
        try:
            return read_parquet_bytes(self.fs.cat_file(path), columns)
        except (OSError, pa.ArrowInvalid) as err:  # an unreadable shard costs a re-synthesis, not the build
            log.warning("skipping unreadable cache shard %s: %s", path, err)
            return None

    def locations(self) -> dict[str, str]:
        """Each cached key's shard (the first shard holding it wins), read from the key columns only."""
        where: dict[str, str] = {}
        for path in self._shards():
            table = self._read(path, ["key"])
            if table is not None:
                for key in table.column("key").to_pylist():
                    where.setdefault(key, path)
        return where

    def done_keys(self) -> set[str]:
        return set(self.locations())

    def add(self, rows: list[dict]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(self._pending, schema=self.schema), buffer)
        put_if_absent(self.fs, join(self.root, f"part-{uuid.uuid4().hex}.parquet"), buffer.getvalue())
        self._pending = []

    def rows_for(self, keys: Iterable[str], where: dict[str, str] | None = None) -> dict[str, dict]:
        """The cached result of each key; `where` (from `locations`, read once for many calls) says
        which shards to read, so asking for a few keys reads only the shards that hold them."""
        where = self.locations() if where is None else where
        by_shard: dict[str, list[str]] = defaultdict(list)
        for key in set(keys):
            if key in where:
                by_shard[where[key]].append(key)
        found: dict[str, dict] = {}
        for path, wanted in by_shard.items():
            table = self._read(path)
            if table is None:
                continue
            mask = pc.is_in(table.column("key"), value_set=pa.array(wanted, type=pa.string()))
            for row in table.filter(mask).to_pylist():
                found.setdefault(row["key"], row)
        return found
