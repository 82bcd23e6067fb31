"""Retention of dump directories: only the dumps of exactly one name count."""

import json
import os
import subprocess
import sys

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf


def dump(images_dir, name, stamp):
    path = images_dir / f"{name}-{stamp}"
    path.mkdir()
    (path / mf.MANIFEST).write_text(json.dumps({"name": name}))
    return str(path)


def test_retention_of_app_never_counts_or_removes_the_dumps_of_app_2(tmp_path):
    app = [dump(tmp_path, "app", f"2025010{day}T000000.000Z") for day in (1, 2, 3)]
    other = [dump(tmp_path, "app-2", f"2025010{day}T000000.000Z") for day in (1, 2)]
    assert mf.dumps_of(str(tmp_path), "app") == app
    assert mf.prune(str(tmp_path), "app", 1, app[-1]) == app[:2]
    assert all(os.path.isdir(path) for path in other)
    assert mf.dumps_of(str(tmp_path), "app-2") == other


def test_directories_without_a_manifest_or_a_stamp_are_not_dumps(tmp_path):
    (tmp_path / "app-20250101T000000.000Z").mkdir()  # unfinished: no manifest
    (tmp_path / "app-latest").mkdir()
    (tmp_path / "app-latest" / mf.MANIFEST).write_text("{}")
    assert mf.dumps_of(str(tmp_path), "app") == []


def owned_by(path, pid):
    """An unfinished dump directory whose owner record names ``pid``."""
    path.mkdir()
    (path / "pages-1.img").write_bytes(b"\0" * 4096)
    (path / mf.OWNER).write_text(json.dumps(mf.build_lock.owner_record(pid=pid, command="test")))
    return str(path)


def test_unfinished_dumps_of_a_dead_writer_are_removed_and_nothing_else(tmp_path):
    """A run killed mid-dump leaves a directory without a manifest (its images as large as the
    process's memory): the next run of the same name removes it. Before this, nothing did."""
    done = dump(tmp_path, "app", "20250101T000000.000Z")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        dead = owned_by(tmp_path / "app-20250102T000000.000Z", dead_child.pid)  # recorded while it ran
        other = owned_by(tmp_path / "app-2-20250102T000000.000Z", dead_child.pid)  # another name
        dead_child.communicate(b"")
        alive = owned_by(tmp_path / "app-20250103T000000.000Z", child.pid)  # still being written
        empty = tmp_path / "app-20250104T000000.000Z"  # killed before it recorded itself
        empty.mkdir()
        foreign = tmp_path / "app-20250105T000000.000Z"  # not empty, no owner: not ours to judge
        foreign.mkdir()
        (foreign / "notes").write_text("x")
        assert mf.remove_abandoned(str(tmp_path), "app") == [dead, str(empty)]
        assert sorted(os.listdir(tmp_path)) == sorted(
            os.path.basename(p) for p in (done, alive, str(foreign), other)
        )
    finally:
        child.kill()
        child.wait()


def test_start_then_finish_leaves_a_complete_dump_without_an_owner(tmp_path):
    path = str(tmp_path / "app-20250101T000000.000Z")
    mf.start(path)
    assert mf.remove_abandoned(str(tmp_path), "app") == []  # this process still writes it
    mf.finish(path, {"name": "app"})
    assert os.listdir(path) == [mf.MANIFEST]
    assert mf.dumps_of(str(tmp_path), "app") == [path]
