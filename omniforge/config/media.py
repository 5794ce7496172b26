"""What a source may make omniforge read: its records' size, and the media files they name (build
sources, eval sets, VocalNet imports)."""

from __future__ import annotations

from pydantic import Field

from omniforge.config.base import Section


class MediaConfig(Section):
    """Media files named in records are read only under the source's folder and its root, only as
    regular files of bounded size: a record is data, and must not make the build read `/etc/passwd`,
    a device or a URL of its choosing."""

    allow_urls: bool = Field(False, description="Also read media at URLs the records name (http://, s3://, "
                             "chained zip://...::); without it only paths under the source's folder or root.")
    max_bytes: int = Field(64 * 2**20, ge=1024, description="Largest media file read (checked before reading).")
    max_audio_seconds: float = Field(600.0, gt=0, description="Longest audio file read, from its header, before any "
                                     "of it is decoded (`media_too_long`).")
    max_record_bytes: int = Field(16 * 2**20, ge=1024, description="Largest JSONL line (one record): a longer one "
                                  "is a reject (`record_too_long`), skipped without being held in memory.")
