"""state.py: 0600 atomic state files, the lock, and byte-exact rewrites of config files."""

import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.strata.ops.plugins.module_utils import state


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        sf = state.StateFile(str(tmp_path / "new" / "s.json"))
        with sf.lock():
            sf.write({"a": 1})
    finally:
        os.umask(old)
    assert mode(sf.path) == 0o600 and mode(sf.lock_path) == 0o600
    assert mode(sf.directory) == 0o700
    assert sf.read() == {"a": 1}
    assert [p.name for p in (tmp_path / "new").iterdir() if ".tmp." in p.name] == []


def test_read_missing_bad_and_remove(tmp_path):
    sf = state.StateFile(str(tmp_path / "s.json"))
    assert sf.read() is None
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(state.StateError, match="not valid JSON"):
        sf.read()
    (tmp_path / "s.json").write_text(json.dumps([1]))
    with pytest.raises(state.StateError, match="JSON object"):
        sf.read()
    assert sf.remove() is True and sf.remove() is False


def _hold_lock(path, ready, release):
    with state.StateFile(path).lock():
        ready.set()
        release.wait(10)


def test_lock_excludes_another_process(tmp_path):
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(state.StateLockedError, match="locked by another run"), state.StateFile(path).lock(
            timeout=0.3
        ):
            pass
    finally:
        release.set()
        holder.join(10)
    with state.StateFile(path).lock(timeout=1):
        pass  # free again once the holder is gone


def test_atomic_write_bytes_keeps_mode_and_bytes(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"a = 1\r\n")
    path.chmod(0o640)
    original = b"# crlf and a trailing space \r\nconcurrent = 4\r\n"
    state.atomic_write_bytes(str(path), original)
    assert path.read_bytes() == original and mode(path) == 0o640
    fresh = tmp_path / "fresh"
    state.atomic_write_bytes(str(fresh), b"x", mode=0o600)
    assert mode(fresh) == 0o600


def test_lock_without_create_makes_nothing(tmp_path):
    """Check mode and "nothing to restore" leave no directory and no lock file behind."""
    sf = state.StateFile(str(tmp_path / "missing" / "s.json"))
    with sf.lock(timeout=0.1, create=False):
        assert sf.read() is None
    assert not (tmp_path / "missing").exists()
    (tmp_path / "missing").mkdir()
    with sf.lock(timeout=0.1, create=False):
        pass
    assert list((tmp_path / "missing").iterdir()) == []


def test_remove_takes_the_lock_file_too(tmp_path):
    sf = state.StateFile(str(tmp_path / "s.json"))
    with sf.lock():
        sf.write({"a": 1})
        assert sf.remove() is True
    assert list(tmp_path.iterdir()) == []
    with sf.lock():
        assert sf.remove() is False  # no state file: only the lock file goes
    assert list(tmp_path.iterdir()) == []


def _wait_for_lock(path, start, got, release):
    start.wait(10)
    with state.StateFile(path).lock(timeout=10):
        got.set()
        release.wait(10)


def test_a_waiter_on_a_removed_lock_file_locks_the_new_one(tmp_path):
    """A run waiting for the lock while its holder removes the lock file must not end up holding
    the removed file while a third run holds a new one."""
    path = str(tmp_path / "s.json")
    sf = state.StateFile(path)
    ctx = multiprocessing.get_context("fork")
    start, got, release = ctx.Event(), ctx.Event(), ctx.Event()
    # forked before the lock is taken, so that it does not share the locked descriptor
    waiter = ctx.Process(target=_wait_for_lock, args=(path, start, got, release))
    waiter.start()
    try:
        with sf.lock():
            start.set()
            assert not got.wait(0.5)  # it waits on the current lock file
            sf.write({"a": 1})
            sf.remove()
        assert got.wait(10)  # it has the lock, on a new lock file at the path
        assert os.path.exists(sf.lock_path)
        with pytest.raises(state.StateLockedError), sf.lock(timeout=0.3):  # a third run is excluded
            pass
    finally:
        release.set()
        waiter.join(10)
