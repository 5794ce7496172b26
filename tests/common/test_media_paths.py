"""Media paths in records are data, not orders: only regular files under the source's folder or root,
of bounded size, and URLs only when allowed; anything else is a reject naming the turn and the reason."""

from __future__ import annotations

import json
import os

import fsspec
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniforge.config.build import SourceConfig
from omniforge.config.media import MediaConfig
from omniforge.tasks.build.sources import load_source
from omniforge.tasks.common.records import MediaRefused, MediaRoots, read_media


@pytest.fixture
def data(tmp_path):
    """data/q.wav beside data/d.jsonl, a secret next to the data folder, a FIFO and a folder inside it."""
    folder = tmp_path / "data"
    folder.mkdir()
    sf.write(folder / "q.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "secret.wav").write_bytes(b"not yours")
    os.mkfifo(folder / "pipe.wav")
    (folder / "dir.wav").mkdir()
    (folder / "link.wav").symlink_to(folder / "q.wav")  # a link the user made inside the root is theirs
    return folder


def source_with(folder, speech: str):
    path = folder / "d.jsonl"
    record = {"id": "r", "conversation": [{"from": "human", "text": "Hi?", "speech": speech},
                                          {"from": "gpt", "text": "Hello."}]}
    path.write_text(json.dumps(record) + "\n")
    return SourceConfig(kind="jsonl", path=str(path), root=str(folder))


HOSTILE = {
    "/etc/passwd": "media_outside_roots",
    "../secret.wav": "media_outside_roots",
    "dir.wav/../../secret.wav": "media_outside_roots",
    "http://127.0.0.1:9/x.wav": "media_url_refused",
    "zip://x.wav::http://example.com/a.zip": "media_url_refused",
    "file:///etc/passwd": "media_url_refused",
    "/dev/zero": "media_outside_roots",
    "pipe.wav": "media_not_a_file",
    "dir.wav": "media_not_a_file",
}


@pytest.mark.parametrize(("speech", "reason"), HOSTILE.items())
def test_a_hostile_media_path_is_a_reject_with_its_reason(data, speech, reason):
    batch = load_source(source_with(data, speech))
    assert batch.dialogues == []
    [reject] = batch.rejects
    assert (reject.record, reject.field, reject.reason) == ("r (line 1)", "conversation[0].speech", reason)


def test_files_under_the_roots_are_read_and_devices_even_when_allowed_are_not(data):
    wav = (data / "q.wav").read_bytes()
    for speech in ("q.wav", str(data / "q.wav"), "link.wav", "./sub/../q.wav"):
        [dialogue] = load_source(source_with(data, speech)).dialogues
        assert dialogue.turns[0].audio == wav
    roots = MediaRoots(("/",), MediaConfig(allow_urls=True))
    with pytest.raises(MediaRefused, match="media_not_a_file"):
        read_media("/dev/zero", roots)  # a device under an allowed root is still not a file


def test_media_past_the_size_cap_is_refused_before_it_is_read(data):
    (data / "big.wav").write_bytes(b"\0" * 5000)
    with pytest.raises(MediaRefused, match="media_too_large"):
        read_media("big.wav", MediaRoots((str(data),), MediaConfig(max_bytes=4096)))
    assert len(read_media("big.wav", MediaRoots((str(data),), MediaConfig(max_bytes=5000)))) == 5000


def test_audio_past_the_duration_cap_is_refused_from_its_header(data):
    """20 minutes of silence are 59 KB of FLAC and 77 MB of samples: refused by the header, never decoded."""
    import numpy as np

    from omniforge.storage.audio import encode_audio

    (data / "long.flac").write_bytes(encode_audio(np.zeros(16000 * 1200, np.float32), 16000))
    roots = MediaRoots((str(data),), MediaConfig(max_audio_seconds=600))
    with pytest.raises(MediaRefused, match="media_too_long: long.flac lasts 1200 s"):
        read_media("long.flac", roots)
    assert read_media("q.wav", roots) == (data / "q.wav").read_bytes()
    (data / "tokens.npy").write_bytes(b"\x93NUMPY not audio")
    assert read_media("tokens.npy", roots)  # not audio: its own reader decides


def test_urls_under_a_url_source_are_its_own_files():
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/set/q.wav", b"RIFF....")
    fs.pipe("/bucket/other/q.wav", b"RIFF....")
    roots = MediaRoots(("memory://bucket/set",))
    assert read_media("q.wav", roots) == b"RIFF...."
    assert read_media("memory://bucket/set/q.wav", roots) == b"RIFF...."
    for outside in ("memory://bucket/other/q.wav", "memory://bucket/set/../other/q.wav"):
        with pytest.raises(MediaRefused, match="media_url_refused|media_outside_roots"):
            read_media(outside, roots)
    assert read_media("memory://bucket/other/q.wav", MediaRoots((), MediaConfig(allow_urls=True))) == b"RIFF...."


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["..", ".", "data", "q.wav", "secret.wav", "", "etc", "passwd", "~"]),
                      min_size=1, max_size=6), absolute=st.booleans())
def test_no_path_reaches_a_file_outside_the_roots(data, parts, absolute):
    """Whatever a record writes, read_media returns bytes only of files under the roots."""
    path = ("/" if absolute else "") + "/".join(parts)
    roots = MediaRoots((str(data),))
    try:
        content = read_media(path, roots)
    except (MediaRefused, OSError):
        return
    assert content == (data / "q.wav").read_bytes()


def test_a_line_past_the_record_cap_is_a_reject_and_the_next_lines_are_read(tmp_path):
    from omniforge.tasks.common.records import RecordError, read_jsonl

    record = {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
    huge = json.dumps({"conversations": [{"from": "human", "value": "x" * 50_000}]})
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([json.dumps({"id": "a", **record}), huge, json.dumps({"id": "b", **record}), huge]) + "\n")
    read = list(read_jsonl(str(path), max_record_bytes=4096))
    assert [origin for origin, _ in read] == ["line 1", "line 2", "line 3", "line 4"]
    assert [isinstance(r, RecordError) and r.reason for _, r in read] == [False, "record_too_long", False, "record_too_long"]
    batch = load_source(SourceConfig(kind="jsonl", path=str(path), media=MediaConfig(max_record_bytes=4096)))
    assert [d.id for d in batch.dialogues] == ["a", "b"]
    assert [(r.record, r.reason) for r in batch.rejects] == [("line 2", "record_too_long"), ("line 4", "record_too_long")]
