"""The few filesystem operations the store needs, on any fsspec URL.

The one that matters is `put_if_absent`: publishing a version is "create this manifest unless it
exists", which must be atomic on every backend so that two writers never clobber one version.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from omniforge.errors import InputError

_MEMORY_LOCK = threading.Lock()


class StoreUnavailable(InputError):
    """The store's URL names no filesystem this machine can open, or the store cannot be reached."""


def open_root(url: str, options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and root path for a store URL; a bare local path is made absolute."""
    if "://" not in url:
        url = Path(url).expanduser().resolve().as_uri()
    try:
        fs, root = fsspec.core.url_to_fs(url, **(options or {}))
    except (ValueError, ImportError, TypeError) as err:  # unknown protocol, missing backend, bad options
        raise StoreUnavailable(f"cannot open the store {url}: {err}") from err
    return fs, root.rstrip("/")


def put_if_absent(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write `data` to `path` only if nothing is there; return False if something was."""
    if isinstance(fs, LocalFileSystem):
        return _local_put_if_absent(path, data)
    if isinstance(fs, MemoryFileSystem):
        with _MEMORY_LOCK:
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True
    try:
        # s3fs (If-None-Match: *) and gcsfs (ifGenerationMatch=0) make this a conditional write.
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def _local_put_if_absent(path: str, data: bytes) -> bool:
    """Write a complete temp file, then hard-link it into place: link(2) fails if the name exists,
    and a reader can never see a half-written file."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)
