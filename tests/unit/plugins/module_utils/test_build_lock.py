"""build_lock.py: real lock files in tmp_path and real processes as their owners (live, exited,
a zombie, a reused pid), other boots and hosts, files of other tools, and racing takers."""

import errno
import fcntl
import json
import multiprocessing
import os
import stat
import subprocess
import threading

import pytest

from ansible_collections.strata.ops.plugins.module_utils import build_lock as bl


@pytest.fixture
def sleeper():
    """A live process to name as a lock's owner; killed (and reaped) afterwards."""
    procs = []

    def start(argv=("sleep", "30")):
        proc = subprocess.Popen(list(argv))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def write(path, record):
    path.write_text(json.dumps(record))
    return path.read_bytes()


def lock_at(path, **kwargs):
    kwargs.setdefault("timeout", 0)
    return bl.BuildLock(str(path), "docker build data-miner:latest", **kwargs)


def dead_record(sleeper, reap=True):
    """The record of a process that ran and was killed; a zombie while not reaped."""
    proc = sleeper()
    record = bl.owner_record(proc.pid, command="provision.py build")
    proc.kill()
    if reap:
        proc.wait()
    else:  # until it is a zombie: SIGKILL is not instant, and a busy machine showed it still alive
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    return record


# ---------------------------------------------------------------- pure parts


def test_the_record_names_this_process(tmp_path):
    old = os.umask(0)
    try:
        with lock_at(tmp_path / "b.lock") as lock:
            on_disk = json.loads((tmp_path / "b.lock").read_text())
            assert on_disk == lock.record
            assert stat.S_IMODE(os.stat(tmp_path / "b.lock").st_mode) == 0o600
    finally:
        os.umask(old)
    with open(f"/proc/{os.getpid()}/stat") as handle:
        start = int(handle.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/sys/kernel/random/boot_id") as handle:
        boot = handle.read().strip()
    assert on_disk["pid"] == os.getpid() and on_disk["start_time"] == start and on_disk["boot_id"] == boot
    assert on_disk["command"] == "docker build data-miner:latest" and on_disk["started"].endswith("Z")
    assert lock.taken_over_from is None and lock.warnings == []
    assert os.listdir(tmp_path) == []  # released; no temporary file left


def test_start_time_of_a_process_whose_name_has_spaces_and_parentheses(tmp_path, sleeper):
    odd = tmp_path / "x) (y z"
    odd.symlink_to("/bin/sleep")
    proc = sleeper([str(odd), "30"])
    with open(f"/proc/{proc.pid}/stat") as handle:
        assert "(x) (y z)" in handle.read()
    ticks, state = bl.process_start(proc.pid)
    assert ticks >= bl.process_start(os.getpid())[0] and state in "RSD"


def test_parse_record_takes_only_ours():
    good = {"pid": 7, "start_time": 1, "boot_id": "b", "host": "h"}
    assert bl.parse_record(json.dumps(good).encode()) == good
    for raw in (b"", b"12345\n", b"[1]", b"\xff", json.dumps(dict(good, pid="7")).encode()):
        assert bl.parse_record(raw) is None
    assert bl.parse_record(json.dumps(dict(good, pid=0)).encode()) is None


@pytest.mark.parametrize(
    ("change", "running", "state", "why"),
    [
        ({}, (100, "S"), bl.ALIVE, "still runs"),
        ({"host": "other"}, None, bl.FOREIGN, "host other"),
        ({"boot_id": "old"}, (100, "S"), bl.DEAD, "before the last reboot"),
        ({}, None, bl.DEAD, "is gone"),
        ({}, (100, "Z"), bl.DEAD, "zombie"),
        ({}, (101, "S"), bl.DEAD, "another start time"),
    ],
)
def test_owner_state(change, running, state, why):
    record = dict({"pid": 7, "start_time": 100, "boot_id": "b", "host": "h"}, **change)
    got = bl.owner_state(record, {"host": "h", "boot_id": "b"}, start_of=lambda _pid: running)
    assert got[0] == state and why in got[1]
    assert bl.owner_state(None, {"host": "h", "boot_id": "b"})[0] == bl.UNOWNED


def test_age_text():
    assert [bl.age_text(s) for s in (5, 125, 3600, 3 * 3600 + 5 * 60, 2 * 86400 + 7200)] == [
        "5 s",
        "2 min",
        "1 h",
        "3 h 5 min",
        "2 d 2 h",
    ]


# ---------------------------------------------------------------- owners


def test_a_live_owner_is_waited_for_then_named(tmp_path, sleeper):
    owner = sleeper()
    path = tmp_path / "b.lock"
    before = write(path, bl.owner_record(owner.pid, command="provision.py build"))
    with pytest.raises(bl.LockHeld) as caught:
        lock_at(path, timeout=0.2, poll=0.05).acquire()
    msg = caught.value.msg
    assert f"pid {owner.pid} (provision.py build) on host" in msg and "since " in msg
    assert f"kill {owner.pid}" in msg and "waited 0.2 s" in msg
    assert caught.value.details["lock"]["held_by"]["pid"] == owner.pid
    assert path.read_bytes() == before


@pytest.mark.parametrize("reap", [True, False], ids=["exited", "zombie"])
def test_a_dead_owner_is_taken_over_and_named(tmp_path, sleeper, reap):
    record = dead_record(sleeper, reap=reap)
    path = tmp_path / "b.lock"
    write(path, record)
    with lock_at(path) as lock:
        assert lock.taken_over_from == record
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"from a dead owner: pid {record['pid']} (provision.py build)" in lock.warnings[0]
    assert not path.exists()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: dict(r, start_time=r["start_time"] + 1), "another start time"),
        (lambda r: dict(r, boot_id="00000000-0000-0000-0000-000000000000"), "before the last reboot"),
    ],
    ids=["reused-pid", "other-boot"],
)
def test_a_live_pid_of_another_process_or_boot_is_no_owner(tmp_path, sleeper, change, why):
    record = change(bl.owner_record(sleeper().pid))
    path = tmp_path / "b.lock"
    write(path, record)
    with lock_at(path) as lock:
        assert lock.taken_over_from == record
    assert why in lock.warnings[0]


def test_a_lock_of_another_host_is_never_taken_over(tmp_path, sleeper):
    path = tmp_path / "b.lock"
    before = write(path, dict(bl.owner_record(sleeper().pid), host="node-b"))
    with pytest.raises(bl.LockHeld, match=r"on host node-b .*cannot tell.*check on node-b"):
        lock_at(path, takeover_unowned=True).acquire()
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"4242\n"], ids=["empty", "other-tool"])
def test_a_file_without_an_owner_record_is_refused_then_taken_on_request(tmp_path, content):
    path = tmp_path / "data-miner_build.lock"
    path.write_bytes(content)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    with pytest.raises(bl.LockUnowned) as caught:
        lock_at(path).acquire()
    msg = caught.value.msg
    assert str(path) in msg and "last modified 2023-11-14T22:13:20.000Z" in msg and " d " in msg
    assert ("(empty)" if not content else "(no owner record in it)") in msg
    assert f"rm {path}" in msg and "takeover_unowned" in msg
    assert path.read_bytes() == content
    with lock_at(path, takeover_unowned=True) as lock:
        assert lock.taken_over_from == {"unowned": True, "modified": "2023-11-14T22:13:20.000Z"}
    assert "held no owner record" in lock.warnings[0]


def test_a_flock_held_by_another_tool_counts_as_held(tmp_path):
    path = tmp_path / "b.lock"
    path.write_bytes(b"")
    # flock locks belong to an open file description: another one conflicts as another process would
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(bl.LockHeld, match="holds a flock on it"):
            lock_at(path, takeover_unowned=True).acquire()
    finally:
        os.close(fd)
    assert path.read_bytes() == b""


# ---------------------------------------------------------------- races and release


def _race(path, start, results, done):
    start.wait()
    lock = bl.BuildLock(path, "racer", timeout=0)
    try:
        lock.acquire()
    except bl.LockHeld as exc:
        results.put(("lost", exc.msg))
        return
    results.put(("won", os.getpid()))
    done.wait(30)  # hold it until every racer has tried
    lock.release()


@pytest.mark.parametrize("rounds", [5])
def test_racing_takers_of_a_stale_lock_exactly_one_wins(tmp_path, sleeper, rounds):
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / "b.lock")
    for _round in range(rounds):
        write(tmp_path / "b.lock", dead_record(sleeper))
        start, done, results = ctx.Barrier(4), ctx.Event(), ctx.Queue()
        racers = [ctx.Process(target=_race, args=(path, start, results, done)) for _racer in range(4)]
        for racer in racers:
            racer.start()
        outcomes = [results.get(timeout=30) for _racer in racers]
        winners = [who for what, who in outcomes if what == "won"]
        assert len(winners) == 1, outcomes
        assert json.loads((tmp_path / "b.lock").read_text())["pid"] == winners[0]
        done.set()
        for racer in racers:
            racer.join(30)
        assert not os.path.exists(path)


def test_racing_threads_of_one_process_exactly_one_wins(tmp_path, sleeper):
    path = tmp_path / "b.lock"
    write(path, dead_record(sleeper))
    start, outcomes, locks = threading.Barrier(3), [], []

    def take():
        start.wait()
        lock = lock_at(path)
        try:
            lock.acquire()
            locks.append(lock)
        except bl.LockHeld as exc:
            outcomes.append(exc.msg)

    threads = [threading.Thread(target=take) for _thread in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(locks) == 1 and len(outcomes) == 2, outcomes
    assert json.loads(path.read_text())["token"] == locks[0].record["token"]
    assert locks[0].release() is True


def test_release_leaves_a_lock_that_is_not_ours(tmp_path, sleeper):
    path = tmp_path / "b.lock"
    lock = lock_at(path).acquire()
    os.unlink(path)  # an operator deleted it ("delete if builds get stuck") and another run took it
    theirs = write(path, bl.owner_record(sleeper().pid, command="provision.py build"))
    assert lock.release() is False
    assert path.read_bytes() == theirs
    assert "provision.py build" in lock.warnings[0] and "left in place" in lock.warnings[0]
    gone = lock_at(path, takeover_unowned=True)
    os.unlink(path)
    gone.acquire()
    os.unlink(path)
    assert gone.release() is False and "removed by someone else" in gone.warnings[0]


def test_the_context_manager_releases_on_an_error(tmp_path):
    path = tmp_path / "b.lock"
    with pytest.raises(RuntimeError), lock_at(path):
        raise RuntimeError("build failed")
    assert not path.exists()


def test_a_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(bl.LockError, match=f"cannot create the build lock {tmp_path}/no/b.lock: .*create "):
        lock_at(tmp_path / "no" / "b.lock").acquire()


def test_without_hard_links_it_creates_the_file_itself(tmp_path, monkeypatch):
    def no_link(*_args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(bl.os, "link", no_link)
    with lock_at(tmp_path / "b.lock") as lock:
        assert json.loads((tmp_path / "b.lock").read_text())["token"] == lock.record["token"]
        assert lock_at(tmp_path / "b.lock").inspect()["state"] == bl.ALIVE
    assert os.listdir(tmp_path) == []


def test_inspect_takes_nothing(tmp_path, sleeper):
    path = tmp_path / "b.lock"
    assert lock_at(path).inspect()["state"] == "free"
    record = dead_record(sleeper)
    before = write(path, record)
    seen = lock_at(path).inspect()
    assert seen["state"] == bl.DEAD and seen["held_by"] == record and "is gone" in seen["why"]
    assert path.read_bytes() == before
