"""`artifacts gc`: a killed writer's files go once the grace period is over; referenced files never do."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from omniforge.storage.gc import find_garbage, remove_garbage
from tests.storage.test_store import publish_speech, speech_table, store  # noqa: F401 - the store fixture

WEEK = timedelta(days=7)


def orphan_writer(store, name: str) -> list[str]:  # noqa: F811 - the fixture
    """Files of a writer that died before publishing."""
    writer = store.writer("speech", name)
    writer.write_table("data", speech_table(6))
    writer.add_file("notes.json", b"{}")
    return sorted(e.path for e in writer.manifest.all_files())


def test_gc_removes_only_old_unreferenced_files(store):  # noqa: F811 - the fixture
    first = publish_speech(store, 4)
    child = store.writer("speech", "grown", parents=[first])  # lists its parent's shards, across names
    child.reuse_shards("data", first)
    child.write_table("data", speech_table(2, seed=1))
    child.publish()
    demo_orphans = orphan_writer(store, "demo")
    orphans = demo_orphans + orphan_writer(store, "never-published")
    later = datetime.now(timezone.utc) + WEEK + timedelta(hours=1)

    assert find_garbage(store, WEEK) == []  # a writer may still be at work: the grace period protects it
    garbage = find_garbage(store, WEEK, now=later)
    assert sorted(g.path for g in garbage) == sorted(orphans)
    assert [g.path for g in find_garbage(store, WEEK, "speech", "demo", now=later)] == demo_orphans

    freed = remove_garbage(store, garbage)
    assert freed == sum(g.bytes for g in garbage) > 0
    assert find_garbage(store, WEEK, now=later) == []
    for ref in ("speech/demo", "speech/grown"):
        assert store.verify(ref) == []  # every published file is still there
    assert store.read_table(store.manifest("speech/grown")).num_rows == 6


def test_the_gc_command_lists_then_deletes(tmp_path):
    import subprocess
    import sys

    from tests.storage.test_store import make_store

    local = make_store(str(tmp_path / "store"))
    publish_speech(local, 4)
    orphans = orphan_writer(local, "demo")
    command = [sys.executable, "-m", "omniforge.cli", "artifacts", "gc", "--store", local.url, "--grace-hours", "0"]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and all(path in listed.stdout for path in orphans)
    assert f"{len(orphans)} unreferenced files" in listed.stdout and local.fs.exists(local.path(orphans[0]))
    kept = subprocess.run(command[:-1] + ["24"], capture_output=True, text=True, timeout=120)
    assert "0 unreferenced files" in kept.stdout  # younger than the grace period
    removed = subprocess.run(command + ["--delete"], capture_output=True, text=True, timeout=120)
    assert f"removed {len(orphans)} files" in removed.stdout
    assert not any(local.fs.exists(local.path(p)) for p in orphans) and local.verify("speech/demo") == []
