"""The versioned store on file://, memory:// and a real S3 server: publish, read, lineage, verify."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pyarrow as pa
import pytest

from omniforge.storage import ArtifactNameError, ArtifactNotFound, ArtifactRef, ArtifactStore
from omniforge.storage.audio import audio_cell, decode_audio, encode_audio
from omniforge.storage.schemas import speech_schema


def speech_table(n: int, seed: int = 0) -> pa.Table:
    """n real (tiny) FLAC utterances in the speech layout."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        wave = 0.3 * np.sin(np.linspace(0, 200 * (i + 1), 1600)) + 0.01 * rng.standard_normal(1600)
        rows.append({
            "utterance_id": f"d{i // 2}/{i % 2}", "dialogue_id": f"d{i // 2}", "turn_index": i % 2,
            "role": "user" if i % 2 == 0 else "assistant", "speaker": f"spk{i % 3}", "text": f"row {i}",
            "audio": audio_cell(encode_audio(wave, 16000)), "sampling_rate": 16000, "duration": 0.1,
            "audio_native": None, "native_sampling_rate": 16000, "backend": "test", "key": f"k{i}",
        })
    return pa.Table.from_pylist(rows, schema=speech_schema())


def make_store(url: str, **options) -> ArtifactStore:
    return ArtifactStore(url, options, rows_per_shard=4, rows_per_row_group=2)


@pytest.fixture(params=["file", "memory", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "file":
        return make_store(str(tmp_path / "store"))
    if request.param == "memory":
        return make_store(f"memory://omniforge-{uuid.uuid4().hex}")
    endpoint = request.getfixturevalue("s3_endpoint")
    return make_store(f"s3://omniforge-test/{uuid.uuid4().hex}", endpoint_url=endpoint)


def publish_speech(store: ArtifactStore, n: int, parents=(), name: str = "demo", seed: int = 0):
    writer = store.writer("speech", name, parents=list(parents), config={"n": n}, config_hash=f"h{n}")
    writer.write_table("data", speech_table(n, seed))
    writer.stats["rows"] = n
    return writer.publish()


def test_publish_and_read_back(store):
    manifest = publish_speech(store, 10)
    assert manifest.version == 1
    assert [s.rows for s in manifest.tables["data"].shards] == [4, 4, 2]
    again = store.manifest("speech/demo@1")
    assert again == manifest
    table = store.read_table(again)
    assert table.num_rows == 10 and table.column("text").to_pylist() == [f"row {i}" for i in range(10)]
    wave, rate = decode_audio(table.column("audio")[3].as_py()["bytes"])
    assert rate == 16000 and wave.shape == (1600,)
    streamed = sum(b.num_rows for b in store.iter_batches(again, columns=["key"], batch_size=3))
    assert streamed == 10
    assert again.code_version and again.config_hash == "h10" and again.created_at
    assert store.latest("speech", "demo") == 1 and store.versions("speech", "nothing") == []


def test_version_reuses_parent_shards_without_copying(store):
    first = publish_speech(store, 8)
    writer = store.writer("speech", "demo", parents=[first])
    writer.reuse_shards("data", first)
    writer.write_table("data", speech_table(2, seed=1))
    second = writer.publish()
    assert second.version == 2
    old_paths = {s.path for s in first.tables["data"].shards}
    assert old_paths <= {s.path for s in second.tables["data"].shards}
    assert store.read_table(second).num_rows == 10
    assert store.verify("speech/demo@2") == []


def test_lineage_across_three_versions(store):
    speech = publish_speech(store, 2)
    units_writer = store.writer("units", "demo", parents=[speech])
    units_writer.write_table("data", pa.table({"key": ["a"], "units": [[1, 2, 3]]}))
    units = units_writer.publish()
    ckpt_writer = store.writer("checkpoint", "tiny", parents=[speech, units])
    ckpt_writer.add_file("model.safetensors", b"weights")
    ckpt = ckpt_writer.publish()
    tree = store.lineage(ckpt.ref())
    assert tree["ref"] == "checkpoint/tiny@1"
    assert [p["ref"] for p in tree["parents"]] == ["speech/demo@1", "units/demo@1"]
    assert [p["ref"] for p in tree["parents"][1]["parents"]] == ["speech/demo@1"]
    assert store.read_bytes(store.manifest("checkpoint/tiny").files["model.safetensors"].path) == b"weights"
    assert [str(r) for r in store.names()] == ["speech/demo", "units/demo", "checkpoint/tiny"]


def test_verify_names_a_flipped_byte_and_a_missing_file(store):
    manifest = publish_speech(store, 6)
    first, second = (s.path for s in manifest.tables["data"].shards)
    data = bytearray(store.read_bytes(first))
    data[len(data) // 2] ^= 0x01
    store.fs.pipe_file(store.path(first), bytes(data))
    store.fs.rm(store.path(second))
    problems = store.verify("speech/demo")
    assert problems == [f"corrupted: {first} (sha256 or size differs from the manifest)", f"missing: {second}"]


def test_concurrent_writers_get_distinct_versions(store):
    results, errors = [], []

    def write(i: int) -> None:
        try:
            results.append(publish_speech(store, 2, seed=i).version)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert store.versions("speech", "demo") == [1, 2, 3, 4, 5, 6]
    assert {store.manifest(f"speech/demo@{v}").config["n"] for v in results} == {2}


def _publish_in_process(url: str, seed: int, start: multiprocessing.Event, out: multiprocessing.Queue) -> None:
    store = make_store(url)
    writer = store.writer("speech", "race", config={"seed": seed})
    writer.write_table("data", speech_table(2, seed))
    start.wait()
    out.put((seed, writer.publish().version))


def test_concurrent_processes_on_local_files(tmp_path):
    """Two processes publish at the same instant: both succeed, with different versions."""
    url = str(tmp_path / "store")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_publish_in_process, args=(url, s, start, out)) for s in range(4)]
    for p in procs:
        p.start()
    time.sleep(3)
    start.set()
    for p in procs:
        p.join(60)
    got = dict(out.get(timeout=5) for _ in procs)
    assert sorted(got.values()) == [1, 2, 3, 4]
    store = make_store(url)
    for seed, version in got.items():
        assert store.manifest(f"speech/race@{version}").config == {"seed": seed}


def test_killed_writer_leaves_no_visible_version(tmp_path):
    url = str(tmp_path / "store")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from tests.storage.test_store import make_store, speech_table
        writer = make_store({url!r}).writer("speech", "killed")
        writer.write_table("data", speech_table(8))
        print("shards written", flush=True)
        time.sleep(60)
        writer.publish()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "shards written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = make_store(url)
    assert store.versions("speech", "killed") == []
    assert store.fs.find(store.path("speech/killed/data"))  # the orphaned shards are there, unseen
    with pytest.raises(ArtifactNotFound, match="no versions of speech/killed"):
        store.manifest("speech/killed")
    assert publish_speech(store, 2, name="killed").version == 1


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "Has Caps", "x" * 65, "-lead", "sp ace", "dots..dots"])
def test_bad_artifact_names_are_refused(tmp_path, bad):
    store = make_store(str(tmp_path / "store"))
    with pytest.raises(ArtifactNameError):
        store.writer("speech", bad)
    with pytest.raises(ArtifactNameError):
        ArtifactRef.parse(f"speech/{bad}@1")


def test_bad_kinds_and_refs_are_refused(tmp_path):
    store = make_store(str(tmp_path / "store"))
    with pytest.raises(ArtifactNameError, match="unknown artifact kind 'audio'"):
        store.writer("audio", "x")
    for text in ["speech", "speech/x@0", "speech/x@latest"]:
        with pytest.raises(ArtifactNameError):
            ArtifactRef.parse(text)
    assert ArtifactRef.parse("speech/x@v3") == ArtifactRef.parse("speech/x@3")
