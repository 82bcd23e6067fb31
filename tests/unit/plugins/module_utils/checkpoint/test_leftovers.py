"""leftovers.py: where containerd keeps its restore copies, which copy a restore made, and what is
left alone (other checkpoints' copies, older ones, two copies of the same checkpoint at once)."""

import os

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import leftovers

from ....fakes.containerd import CRIU_FILES, containerd_proc, leave_copy


def test_the_temp_dir_is_xdg_runtime_dir_else_tmpdir_else_tmp_once_each(tmp_path):
    proc, temp = containerd_proc(tmp_path)
    (tmp_path / "host" / "run" / "user" / "0").mkdir(parents=True)
    (tmp_path / "host" / "scratch").mkdir()
    for pid, comm, environ in (
        ("4200", "containerd", b"TMPDIR=/scratch\0"),
        ("4300", "containerd", b"XDG_RUNTIME_DIR=/run/user/0\0TMPDIR=/scratch\0"),
        ("4400", "containerd", b""),  # the same /tmp as 4100: listed once
        ("4500", "dockerd", b"TMPDIR=/elsewhere\0"),
    ):
        (tmp_path / "proc" / pid).mkdir()
        (tmp_path / "proc" / pid / "comm").write_text(comm + "\n")
        (tmp_path / "proc" / pid / "environ").write_bytes(environ)
        (tmp_path / "proc" / pid / "root").symlink_to(tmp_path / "host")
    (tmp_path / "proc" / "self").mkdir()
    found = leftovers.containerd_temp_dirs(proc)
    assert sorted(found.values()) == ["/run/user/0", "/scratch", "/tmp"]
    assert os.path.realpath(next(r for r, own in found.items() if own == "/tmp")) == str(temp)


def test_the_copy_the_restore_made_goes_and_nothing_else(tmp_path):
    proc, temp = containerd_proc(tmp_path)
    older = leave_copy(temp)  # an earlier restore of the same checkpoint, before this module ran
    files = {name: len(data) for name, data in CRIU_FILES.items()}
    copies = leftovers.RestoreCopies(files, proc)
    ours = leave_copy(temp)
    other = leave_copy(temp, {"inventory.img": b"other", "pages-1.img": b"\0" * 10})
    assert copies.result() == {"containerd_copy_removed": f"/tmp/{ours.name}"}
    assert not ours.exists()
    assert older.exists() and other.exists()


def test_no_copy_is_nothing_to_remove(tmp_path):
    proc, _temp = containerd_proc(tmp_path)
    copies = leftovers.RestoreCopies({"pages-1.img": 8192}, proc)
    assert copies.result() == {"containerd_copy_removed": None}


def test_two_copies_of_the_same_checkpoint_at_once_are_both_left_and_named(tmp_path):
    proc, temp = containerd_proc(tmp_path)
    copies = leftovers.RestoreCopies({name: len(data) for name, data in CRIU_FILES.items()}, proc)
    first, second = leave_copy(temp), leave_copy(temp)
    found = copies.result()
    assert found["containerd_copy_removed"] is None
    assert f"/tmp/{first.name}, /tmp/{second.name}" in found["warnings"][0]
    assert first.exists() and second.exists()


def test_no_containerd_running_finds_nothing(tmp_path):
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "comm").write_text("systemd\n")
    copies = leftovers.RestoreCopies({"pages-1.img": 1}, str(tmp_path / "proc"))
    assert copies.dirs == {} and copies.result() == {"containerd_copy_removed": None}


def test_a_copy_that_cannot_be_removed_is_named_not_reported_removed(tmp_path, monkeypatch):
    proc, temp = containerd_proc(tmp_path)
    copies = leftovers.RestoreCopies({name: len(data) for name, data in CRIU_FILES.items()}, proc)
    stuck = leave_copy(temp)
    monkeypatch.setattr(leftovers.shutil, "rmtree", lambda path, ignore_errors=False: None)  # EBUSY, EPERM
    found = copies.result()
    assert found["containerd_copy_removed"] is None
    assert f"/tmp/{stuck.name} (could not be removed" in found["warnings"][0]
