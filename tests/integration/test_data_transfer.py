"""strata.ops.data_transfer between the lab hosts: strata-lab-1 (the source, where the module runs) copies
trees to strata-lab-2 (and, for a shared source, both copy into strata-lab-1) over ssh.

Every copy is compared with its source on both hosts, entry by entry: type, content (sha1), size, mode,
owner, mtime (ns), symlink target, hard links (the names sharing one inode inside the copy), and sparse
files stay sparse. Everything lives under /srv/it-transfer on both hosts (removed afterwards); the lab
hosts' ssh keys are authorized here as the role would do it (idempotently). The module runs as
``ansible <host> -i inventories/lab -m strata.ops.data_transfer`` (docker connection); the action plugin
prints progress lines before the json callback's document. Its payload directory goes under
/srv/it-transfer/tmp (TMPDIR), so a module killed here leaves nothing behind in /tmp.
"""

import json
import os
import subprocess
import time
import uuid

import pytest

from ansible_collections.strata.ops.plugins.module_utils.tree_copy.plan import range_key

from .conftest import REPO
from .transfer_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .transfer_fixtures import (
    ANSIBLE,
    DST_HOST,
    INVENTORY,
    MIB,
    SRC_HOST,
    ansible_env,
    assert_ok,
    assert_same_tree,
    exists,
    make_shared_source,
    make_tree,
    prepare_lab,
    py,
    run_ansible,
    sh,
    shared_tree,
    small_files,
    snapshot,
    task_result,
    tree_bytes,
)

pytestmark = pytest.mark.needs("docker")

ROOT = "/srv/it-transfer"
STATE = f"{ROOT}/state"
TMP = f"{ROOT}/tmp"
SSH_OPTIONS = ["StrictHostKeyChecking=accept-new"]
# A second sshd of our own on strata-lab-2 for the lost-connection test: stopping the system's sshd
# would also cut everyone else's transfers to strata-lab-2.
SSHD_PORT = 2297
SSHD_PID = f"{ROOT}/sshd.pid"
KNOWN_HOSTS = f"{ROOT}/known_hosts"
STOP_SSHD = (
    f"pid=$(cat {SSHD_PID} 2>/dev/null); "
    f'if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = sshd ]; then kill "$pid"; fi; '
    f"rm -f {SSHD_PID}"
)

# Run on a lab host (argv: marker, signal number): signals the python3 processes whose environment
# holds the marker (the module of one run: its children inherit the environment but are not python);
# prints their pids.
SIGNAL_MODULE = r"""
import os, sys
marker, signum = b"IT_TRANSFER_RUN=" + sys.argv[1].encode(), int(sys.argv[2])
found = []
for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            environ = handle.read().split(b"\0")
        with open("/proc/%d/comm" % pid, "rb") as handle:
            comm = handle.read()
    except OSError:
        continue
    if marker in environ and comm.startswith(b"python") and pid != os.getpid():
        os.kill(pid, signum)
        found.append(pid)
print(" ".join(map(str, found)))
"""

# Run on strata-lab-2 (argv: pid file): kill -9 our sshd and its sessions (the sshd processes below
# it), as a lost link ends them: their TCP connections break at once and new ones are refused. What
# the sessions ran (the range receivers) is left to see its input end; prints how many were killed.
CUT_SSHD = r"""
import os, signal, sys
with open(sys.argv[1]) as handle:
    top = int(handle.read().split()[0])
parents, names = {}, {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open("/proc/%s/stat" % name, "rb") as handle:
                parents[int(name)] = int(handle.read().rpartition(b")")[2].split()[1])
            with open("/proc/%s/comm" % name, "rb") as handle:
                names[int(name)] = handle.read().strip()
        except (OSError, IndexError, ValueError):
            pass
below, grown = {top}, True
while grown:
    more = {pid for pid, parent in parents.items() if parent in below} - below
    below |= more
    grown = bool(more)
doomed = sorted(pid for pid in below if names.get(pid, b"").startswith(b"sshd"))
for pid in doomed:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
print(len(doomed))
"""


# -- helpers ---------------------------------------------------------------------------------------


def ansible_argv(host, args, options=(), marker=None):
    """ansible <host> -m strata.ops.data_transfer; the module's environment gets TMPDIR (its payload
    under ROOT) and IT_TRANSFER_RUN=<marker> (to find its process)."""
    full = {
        "dest_host": DST_HOST,
        "ssh_options": SSH_OPTIONS,
        "state_dir": STATE,
        "streams": 4,
        "large_file_min": "8M",
        "chunk_size": "2M",
        **args,
    }
    extra_env = {"TMPDIR": TMP, "IT_TRANSFER_RUN": marker or "-"}
    return [
        ANSIBLE,
        host,
        "-i",
        INVENTORY,
        "-m",
        "strata.ops.data_transfer",
        "-a",
        json.dumps(full),
        "-e",
        json.dumps({"ansible_docker_extra_env": extra_env, "data_transfer_progress_every": 1}),
        *options,
    ]


def transfer(args, host=SRC_HOST, check=False, timeout=300):
    """Runs data_transfer on ``host``: the task's result."""
    options = ["--check"] if check else []
    proc = run_ansible(ansible_argv(host, args, options), timeout=timeout)
    return task_result(host, proc.stdout, proc.stderr)


def start_transfer(args, marker, host=SRC_HOST):
    return subprocess.Popen(
        ansible_argv(host, args, marker=marker),
        cwd=REPO,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, host=SRC_HOST, timeout=300):
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"ansible did not end within {timeout} s: {stdout[-2000:]}") from None
    return task_result(host, stdout, stderr)


def read_progress(path):
    text = sh(SRC_HOST, f"cat '{path}' 2>/dev/null", check=False)
    try:
        return json.loads(text)
    except ValueError:
        return None


def wait_for_progress(proc, path, low, high=1.0, timeout=120):
    """Polls the progress file until bytes_done/bytes_total is in [low, high]: that progress."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        progress = read_progress(path)
        if progress and progress["bytes_total"]:
            seen = progress["bytes_done"] / progress["bytes_total"]
            if low <= seen <= high:
                return progress
            assert seen < high, f"progress jumped past {high:.0%} ({seen:.0%}): lower bwlimit"
        if proc.poll() is not None:
            raise AssertionError(f"the transfer ended before {low:.0%} was seen: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError(f"no progress of {low:.0%} within {timeout} s (last seen {seen})")


def processes_of(host, pattern):
    """Pids of the processes whose command line holds ``pattern`` (pgrep -f; the bracket keeps the
    shell that runs pgrep from matching)."""
    return sh(host, f"pgrep -a -f -- '[{pattern[0]}]{pattern[1:]}' || true").splitlines()


def wait_gone(host, pattern, timeout=60):
    deadline = time.monotonic() + timeout
    while processes_of(host, pattern):
        assert time.monotonic() < deadline, f"processes for {pattern} still run on {host}"
        time.sleep(0.3)


def assert_failed(result, kind):
    assert result.get("failed") is True, result
    assert result.get("error") == kind, (result.get("error"), result.get("msg"))
    assert "Traceback" not in result["msg"] and not result["msg"].startswith("Task failed: Module failed")


# -- fixtures --------------------------------------------------------------------------------------


def _clean(host):
    """Our mounts, our sshd and ROOT itself, gone (leftovers of an earlier, interrupted run too)."""
    sh(
        host,
        f"for m in $(awk '$2 ~ \"^{ROOT}(/|$)\" {{print $2}}' /proc/mounts | sort -r); do "
        'umount -l "$m"; done; '
        f"{STOP_SSHD}; rm -rf {ROOT}",
    )


@pytest.fixture(scope="module")
def lab():
    """ROOT fresh on the lab hosts with STATE and TMP (our mounts and sshd gone too; afterwards as
    well), the root keys authorized: prepare_lab."""
    yield from prepare_lab(ROOT, (STATE, TMP), clean=_clean)


# -- the tests -------------------------------------------------------------------------------------

MIXED = [
    *small_files("small/a", 40),
    *small_files("small/b/deeper", 40, seed=100),
    *small_files("small/c", 40, seed=200),
    {"kind": "file", "path": "names/file with spaces.txt", "size": 321},
    {"kind": "file", "path": "names/données été.txt", "size": 4567},
    {"kind": "file", "path": "names/Ελληνικά δεδομένα.dat", "size": 1234},
    {"kind": "file", "path": "names/日本語.bin", "size": 99},
    {"kind": "file", "path": "names/line\nbreak.txt", "size": 12},
    {"kind": "file", "path": "empty.txt", "size": 0},
    {"kind": "dir", "path": "empty dir"},
    {"kind": "dir", "path": "private", "mode": 0o700},
    {"kind": "file", "path": "private/readonly.txt", "size": 50, "mode": 0o444},
    {"kind": "file", "path": "private/run.sh", "size": 70, "mode": 0o755},
    {"kind": "symlink", "path": "latest", "target": "small/a/f000.bin"},
    {"kind": "symlink", "path": "dangling link", "target": "nowhere/at all"},
    {"kind": "file", "path": "hard/a.bin", "size": 65536},
    {"kind": "hardlink", "path": "hard/b.bin", "target": "hard/a.bin"},
    {"kind": "fifo", "path": "special/fifo"},
    {"kind": "sparse", "path": "sparse.img", "size": 40 * MIB, "data": [[MIB, 65536], [33 * MIB, 65536]]},
    {"kind": "file", "path": "large/random one.bin", "size": 24 * MIB + 12345},
    {"kind": "file", "path": "large/random two.bin", "size": 24 * MIB},
]


def test_mixed_tree_is_copied_exactly_and_a_second_run_sends_nothing(where):
    src, dst = where
    make_tree(SRC_HOST, src, MIXED)
    args = {"src_path": src, "dest_path": dst, "streams": 4, "large_file_min": "8M", "chunk_size": "2M"}

    first = transfer(args)
    assert_ok(first)
    tree = assert_same_tree(SRC_HOST, src, DST_HOST, dst, sparse=["sparse.img"])
    assert first["changed"] is True
    assert first["source"] == src and first["destination"] == f"{DST_HOST}:{dst}"
    plan = first["plan"]
    assert plan["bytes"] == tree_bytes(tree) and first["bytes_sent"] == plan["bytes"]
    assert plan["files"] == sum(1 for entry in tree.values() if entry["type"] != "dir")
    assert plan["directories"] == sum(1 for entry in tree.values() if entry["type"] == "dir")
    assert plan["large_files"] == 3 and plan["streams"] == 4
    assert len(first["streams"]) == 4 and all(
        s["state"] == "done" and not s["error"] for s in first["streams"]
    )
    assert first["conflicts"] == [] and first["extras"] == [] and first["deleted"] == []
    assert first["unreadable"] == {}
    # the hard-link pair is one inode in the copy too (assert_same_tree compared "links"; named here)
    assert tree["hard/a.bin"]["links"] == ["hard/a.bin", "hard/b.bin"]

    second = transfer(args)
    assert_ok(second)
    assert second["changed"] is False, second["plan"]
    assert second["plan"]["bytes"] == 0 and second["plan"]["files"] == 0
    assert "bytes_sent" not in second
    assert_same_tree(SRC_HOST, src, DST_HOST, dst, sparse=["sparse.img"])


def test_dest_path_with_missing_parents_is_created(where):
    """The documentation: dest_path is "created when missing" - its parents too (mkdir -p)."""
    src, dst = where
    # small files only: rsync alone makes the directory (a large file's range receiver makes its work
    # directory with all parents, os.makedirs, racing the rsync streams: the outcome then varies)
    make_tree(SRC_HOST, src, [*small_files("small", 3), {"kind": "file", "path": "top.txt", "size": 5}])
    deep = f"{dst}/not/yet/there"
    result = transfer({"src_path": src, "dest_path": deep, "retry_delay": 1})
    assert_ok(result)
    assert_same_tree(SRC_HOST, src, DST_HOST, deep)


def test_killed_transfer_resumes_sending_only_what_is_missing(where):
    src, dst = where
    size = 200 * MIB
    make_tree(
        SRC_HOST,
        src,
        [*small_files("small", 6), {"kind": "file", "path": "data/big.bin", "size": size, "seed": 7}],
    )
    whole = tree_bytes(snapshot(SRC_HOST, src))
    progress_file = f"{STATE}/progress-{uuid.uuid4().hex[:8]}.json"
    args = {
        "src_path": src,
        "dest_path": dst,
        "streams": 4,
        "large_file_min": "8M",
        "chunk_size": "4M",
        "progress_file": progress_file,
    }
    marker = uuid.uuid4().hex
    proc = start_transfer(dict(args, bwlimit="30M"), marker)
    try:
        progress = wait_for_progress(proc, progress_file, 0.3, 0.7)
        killed = py(SRC_HOST, SIGNAL_MODULE, marker, "9").split()
        assert len(killed) == 1, f"expected the one module process, killed {killed}"
    finally:
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    # its rsync and ssh children end with it (PR_SET_PDEATHSIG), the range receivers with their ssh
    wait_gone(SRC_HOST, dst)
    wait_gone(DST_HOST, dst)
    assert not exists(DST_HOST, f"{dst}/data/big.bin"), "the big file is at its final path while incomplete"
    tree = snapshot(SRC_HOST, src)
    key = range_key("data/big.bin", tree["data/big.bin"])
    assert exists(DST_HOST, f"{dst}/.strata-transfer/{key}.part")
    recorded = sum(
        int(value or 0)
        for value in sh(
            DST_HOST, f"cd {dst}/.strata-transfer && for m in {key}.[0-9]*; do cat $m; echo; done"
        ).split()
    )
    assert 0 < recorded < size
    # the small files rsync finished are at their final paths with their size; the rest is sent whole
    small_missing = 0
    copy = snapshot(DST_HOST, dst)
    for path, entry in tree.items():
        if path.startswith("small/") and entry["type"] == "file":
            there = copy.get(path)
            if not there or there["size"] != entry["size"] or there["mtime_ns"] != entry["mtime_ns"]:
                small_missing += entry["size"]

    again = transfer(args)
    assert_ok(again)
    assert again["changed"] is True
    missing = size - recorded + small_missing
    assert again["plan"]["bytes"] == missing, (again["plan"], recorded, small_missing)
    assert again["bytes_sent"] == missing
    assert again["bytes_sent"] < whole
    # the progress file was read up to a second before the kill: what was resent beyond what it
    # reported as done is at most the data in flight, a few chunks
    assert again["bytes_sent"] <= whole - progress["bytes_done"] + 4 * 4 * MIB, (
        progress["bytes_done"],
        missing,
    )
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)


def test_ranges_recorded_at_the_destination_are_not_sent_again(where):
    """Deterministic resume: one large file half written (its ranges' markers say how much), one with
    every range written but not yet moved into place (killed right before "finish")."""
    src, dst = where
    size = 16 * MIB
    spec = [
        {"kind": "file", "path": "half.bin", "size": size, "seed": 1},
        {"kind": "file", "path": "all ranges.bin", "size": size, "seed": 2},
        {"kind": "file", "path": "small.txt", "size": 10},
    ]
    make_tree(SRC_HOST, src, spec)
    make_tree(DST_HOST, f"{dst}-reference", spec)  # the same bytes, to build the work files from
    tree = snapshot(SRC_HOST, src)
    half_key, all_key = (range_key(path, tree[path]) for path in ("half.bin", "all ranges.bin"))
    work = f"{dst}/.strata-transfer"
    # half.bin: ranges 0 and 2M complete, 4M half written; beyond that garbage that must be overwritten
    written = 5 * MIB
    sh(
        DST_HOST,
        f"mkdir -p {work} && cd {work} && head -c {size} /dev/urandom > {half_key}.part && "
        f"dd if='{dst}-reference/half.bin' of={half_key}.part bs=1M count=5 conv=notrunc status=none && "
        f"printf {2 * MIB} > {half_key}.0 && printf {2 * MIB} > {half_key}.{2 * MIB} && "
        f"printf {MIB} > {half_key}.{4 * MIB} && "
        f"cp '{dst}-reference/all ranges.bin' {all_key}.part && "
        f"for offset in $(seq 0 {2 * MIB} {size - 1}); do printf {2 * MIB} > {all_key}.$offset; done",
    )
    args = {"src_path": src, "dest_path": dst, "large_file_min": "8M", "chunk_size": "2M"}
    result = transfer(args)
    assert_ok(result)
    assert result["changed"] is True
    assert result["plan"]["large_files"] == 2
    assert result["plan"]["bytes"] == size - written + 10
    assert result["bytes_sent"] == size - written + 10
    sh(DST_HOST, f"rm -rf '{dst}-reference'")
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)  # .strata-transfer is gone too

    again = transfer(args)
    assert_ok(again)
    assert again["changed"] is False and again["plan"]["bytes"] == 0


CONFLICT_SOURCE = [
    {"kind": "file", "path": "same.txt", "size": 100},
    {"kind": "file", "path": "differs.txt", "size": 200, "seed": 1, "mtime": 1700000100},
    {"kind": "file", "path": "big.bin", "size": 10 * MIB, "seed": 2, "mtime": 1700000100},
    {"kind": "file", "path": "newer there.txt", "size": 300, "seed": 3, "mtime": 1700000100},
]
# At the destination before the copy: two older files that differ (one by size, the large one by
# content and mtime, same size) and one newer than the source.
CONFLICT_DEST = [
    {"kind": "file", "path": "differs.txt", "size": 150, "seed": 11, "mtime": 1600000000},
    {"kind": "file", "path": "big.bin", "size": 10 * MIB, "seed": 12, "mtime": 1600000000},
    {"kind": "file", "path": "newer there.txt", "size": 300, "seed": 13, "mtime": 1800000000},
]


def test_differing_destination_files_fail_unless_existing_says_update_or_overwrite(where):
    src, dst = where
    make_tree(SRC_HOST, src, CONFLICT_SOURCE)
    make_tree(DST_HOST, dst, CONFLICT_DEST)
    before = snapshot(DST_HOST, dst)
    args = {"src_path": src, "dest_path": dst}

    refused = transfer(args)
    assert_failed(refused, "destination_differs")
    assert refused["conflicts"] == ["big.bin", "differs.txt", "newer there.txt"]
    for name in ("big.bin", "differs.txt", "newer there.txt"):
        assert name in refused["msg"]
    assert "existing" in refused["msg"]
    assert snapshot(DST_HOST, dst) == before, "the destination changed although the copy was refused"

    update = transfer(dict(args, existing="update"))
    assert_ok(update)
    assert update["changed"] is True
    assert update["conflicts"] == ["big.bin", "differs.txt"]  # the newer one is not a conflict for update
    copy, source = snapshot(DST_HOST, dst), snapshot(SRC_HOST, src)
    for name in ("same.txt", "differs.txt", "big.bin"):
        assert (
            copy[name]["sha1"] == source[name]["sha1"] and copy[name]["mtime_ns"] == source[name]["mtime_ns"]
        )
    assert copy["newer there.txt"] == before["newer there.txt"], (
        "update replaced a file newer at the destination"
    )

    overwrite = transfer(dict(args, existing="overwrite"))
    assert_ok(overwrite)
    assert overwrite["changed"] is True and overwrite["conflicts"] == ["newer there.txt"]
    assert overwrite["bytes_sent"] == 300
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)


def test_no_space_at_the_destination_is_refused_with_both_numbers(where):
    src, dst = where
    make_tree(SRC_HOST, src, [{"kind": "file", "path": "twenty.bin", "size": 20 * MIB}])
    small = f"{os.path.dirname(dst)}/small"
    sh(DST_HOST, f"mkdir -p {small} && mount -t tmpfs -o size=8m tmpfs {small}")
    try:
        free = int(
            py(DST_HOST, "import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_bavail * s.f_frsize)", small)
        )
        result = transfer({"src_path": src, "dest_path": f"{small}/copy"})
        assert_failed(result, "no_space")
        assert result["needed_bytes"] == 20 * MIB and result["free_bytes"] == free
        assert str(20 * MIB) in result["msg"] and str(free) in result["msg"], result["msg"]
        assert small in result["msg"]
        assert sh(DST_HOST, f"ls -A {small}").split() == [], "something was written to the full destination"
    finally:
        sh(DST_HOST, f"umount {small}")


def test_missing_source_is_named(where):
    src, dst = where
    result = transfer({"src_path": f"{src}/not here", "dest_path": dst})
    assert result.get("failed") is True
    assert f"{src}/not here" in result["msg"] and "does not exist" in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"]
    assert not exists(DST_HOST, dst)


def test_unreachable_destination_fails_quickly_with_the_ssh_message(where):
    src, dst = where
    make_tree(SRC_HOST, src, small_files("small", 3))
    started = time.monotonic()
    refused = transfer({"src_path": src, "dest_path": dst, "dest_port": 1})
    assert time.monotonic() - started < 30
    assert refused.get("failed") is True and "Traceback" not in refused["msg"]
    assert "port 1: Connection refused" in refused["msg"], refused["msg"]
    assert f"{DST_HOST}:{dst}" in refused["msg"]

    unknown = transfer({"src_path": src, "dest_path": dst, "dest_host": "no-such-host.invalid"})
    assert unknown.get("failed") is True
    assert "Could not resolve hostname no-such-host.invalid" in unknown["msg"], unknown["msg"]
    assert not exists(DST_HOST, dst)


def test_lost_connection_fails_as_incomplete_then_a_rerun_completes(where):
    src, dst = where
    make_tree(
        SRC_HOST,
        src,
        [
            *small_files("small", 20),
            {"kind": "file", "path": "one.bin", "size": 24 * MIB, "seed": 1},
            {"kind": "file", "path": "two.bin", "size": 24 * MIB, "seed": 2},
        ],
    )
    progress_file = f"{STATE}/progress-{uuid.uuid4().hex[:8]}.json"
    args = {
        "src_path": src,
        "dest_path": dst,
        "dest_port": SSHD_PORT,
        "ssh_options": [*SSH_OPTIONS, f"UserKnownHostsFile={KNOWN_HOSTS}"],
        "retries": 1,
        "retry_delay": 1,
        "progress_file": progress_file,
    }
    start_sshd = f"/usr/sbin/sshd -p {SSHD_PORT} -o PidFile={SSHD_PID}"
    sh(DST_HOST, start_sshd)
    try:
        proc = start_transfer(dict(args, bwlimit="8M"), uuid.uuid4().hex)
        progress = wait_for_progress(proc, progress_file, 0.3, 0.65)
        assert int(py(DST_HOST, CUT_SSHD, SSHD_PID)) >= 2  # the listener and at least one session
        cut = time.monotonic()
        result = finish(proc)
        seconds = time.monotonic() - cut
        # back: the same task again (its outcome is asserted after the failed run's)
        sh(DST_HOST, start_sshd)
        again = transfer(args)
    finally:
        sh(DST_HOST, STOP_SSHD)

    assert seconds < 60
    assert_failed(result, "incomplete")
    failed = [s for s in result["streams"] if s["state"] == "failed"]
    assert failed, result["streams"]
    for stream in failed:
        assert f"stream {stream['index']}: " in result["msg"] and stream["error"]
    assert "gave up after 2 attempts" in result["msg"], result["msg"]
    assert progress["bytes_done"] <= result["bytes_sent"] < progress["bytes_total"]
    assert_ok(again)
    # what was written before the cut is not sent again, but for the ranges in flight (2M each)
    assert 0 < again["bytes_sent"] <= progress["bytes_total"] - progress["bytes_done"] + 4 * 2 * MIB
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)


def test_unreadable_source_file_is_named_and_the_rest_is_copied(where):
    """Root reads any mode, so the unreadable file is a write-only sysfs attribute bind-mounted over a
    file of the tree: open(O_RDONLY) fails with EACCES for root too."""
    src, dst = where
    make_tree(SRC_HOST, src, [*small_files("small", 5), {"kind": "file", "path": "secret.txt", "size": 40}])
    sh(SRC_HOST, f"mount --bind /sys/bus/pci/rescan {src}/secret.txt")
    try:
        assert "Permission denied" in sh(SRC_HOST, f"cat {src}/secret.txt 2>&1 || true")
        result = transfer({"src_path": src, "dest_path": dst})
        assert_failed(result, "incomplete")
        assert list(result["unreadable"]) == ["secret.txt"], result["unreadable"]
        assert "Permission denied" in result["unreadable"]["secret.txt"]
        assert "secret.txt (Permission denied)" in result["msg"], result["msg"]
        copy = snapshot(DST_HOST, dst)
        assert "secret.txt" not in copy
        source = snapshot(SRC_HOST, src)
        for path, entry in source.items():
            if path.startswith("small/") and entry["type"] == "file":
                assert copy[path]["sha1"] == entry["sha1"]
    finally:
        sh(SRC_HOST, f"umount {src}/secret.txt")
    # readable again: a rerun completes the copy
    again = transfer({"src_path": src, "dest_path": dst})
    assert_ok(again)
    assert again["unreadable"] == {}
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)


def test_delete_extra_deletes_only_what_a_check_run_listed(where):
    src, dst = where
    make_tree(SRC_HOST, src, [*small_files("small", 5), {"kind": "file", "path": "keep.txt", "size": 10}])
    args = {"src_path": src, "dest_path": dst}
    assert_ok(transfer(args))
    sh(
        DST_HOST,
        f"cd {dst} && echo extra > extra.txt && mkdir old && echo stale > old/stale.bin && "
        "echo extra > small/extra.bin",
    )
    extras = ["extra.txt", "old", "old/stale.bin", "small/extra.bin"]

    refused = transfer(dict(args, delete_extra=True))
    assert_failed(refused, "delete_not_listed")
    for path in extras:
        assert path in refused["msg"], refused["msg"]
    assert sorted(refused["would_delete"]) == extras
    assert exists(DST_HOST, f"{dst}/extra.txt") and exists(DST_HOST, f"{dst}/old/stale.bin")

    listed = transfer(dict(args, delete_extra=True), check=True)
    assert_ok(listed)
    assert listed["changed"] is True and listed["extras"] == extras and listed["deleted"] == []
    assert exists(DST_HOST, f"{dst}/extra.txt") and exists(DST_HOST, f"{dst}/old/stale.bin")

    # an extra file that appeared after the check run is not deleted: the run refuses, deleting nothing
    sh(DST_HOST, f"echo late > {dst}/late.txt")
    late = transfer(dict(args, delete_extra=True))
    assert_failed(late, "delete_not_listed")
    assert "late.txt" in late["msg"] and "extra.txt" not in late["msg"], late["msg"]
    assert exists(DST_HOST, f"{dst}/extra.txt") and exists(DST_HOST, f"{dst}/late.txt")

    sh(DST_HOST, f"rm {dst}/late.txt")
    deleted = transfer(dict(args, delete_extra=True))
    assert_ok(deleted)
    assert deleted["changed"] is True and deleted["deleted"] == extras
    assert not exists(DST_HOST, f"{dst}/extra.txt") and not exists(DST_HOST, f"{dst}/old")
    assert not exists(DST_HOST, f"{dst}/small/extra.bin")
    # the directories the extras were deleted from keep the source's times, as rsync --delete keeps them
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)
    assert transfer(args)["changed"] is False

    # the listing was used up: the next extra needs a check run again
    sh(DST_HOST, f"echo new > {dst}/new.txt")
    assert_failed(transfer(dict(args, delete_extra=True)), "delete_not_listed")
    assert exists(DST_HOST, f"{dst}/new.txt")


@pytest.mark.parametrize(
    ("changed", "size"),
    [("top.txt", 100), ("sub/large.bin", 9 * MIB)],
    ids=["rsync-in-root", "ranges-in-sub"],
)
def test_rerun_after_a_file_changed_at_the_source_keeps_directory_times(where, changed, size):
    """A file rewritten in place at the source (its directory's time stays) is sent again with
    existing=overwrite: by rsync (a small file in the root) or in ranges (a large file in sub/, its
    work files in the root's .strata-transfer/). The copy's directories keep the source's times."""
    src, dst = where
    make_tree(
        SRC_HOST,
        src,
        [
            {"kind": "file", "path": "top.txt", "size": 100},
            *small_files("sub", 3),
            {"kind": "file", "path": "sub/large.bin", "size": 9 * MIB},
        ],
    )
    args = {"src_path": src, "dest_path": dst, "existing": "overwrite"}
    assert_ok(transfer(args))
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)

    sh(SRC_HOST, f"cd {src} && head -c 50 /dev/urandom | dd of='{changed}' conv=notrunc status=none")
    rewritten = transfer(args)
    assert_ok(rewritten)
    assert rewritten["conflicts"] == [changed] and rewritten["bytes_sent"] == size
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)
    again = transfer(args)  # and so the next run has nothing to do
    assert again["changed"] is False, again["plan"]


SHARED = shared_tree(30, 20 * MIB, 12 * MIB)


def test_two_source_hosts_share_one_tree_then_a_full_run_sends_nothing(where):
    """The same tree on both hosts (as a shared mount would show it); each sends its part into
    strata-lab-1 (strata-lab-1 over ssh to itself)."""
    src, dst = where
    dst = dst.replace("/dst", "/shared-dst")
    source = make_shared_source(src, SHARED)
    base = {"src_path": src, "dest_host": SRC_HOST, "dest_path": dst, "part_count": 2}
    first = start_transfer(dict(base, part_index=0), uuid.uuid4().hex, host=SRC_HOST)
    second = start_transfer(dict(base, part_index=1), uuid.uuid4().hex, host=DST_HOST)
    part0, part1 = finish(first, SRC_HOST), finish(second, DST_HOST)
    assert_ok(part0)
    assert_ok(part1)
    assert part0["bytes_sent"] > 0 and part1["bytes_sent"] > 0
    assert part0["bytes_sent"] + part1["bytes_sent"] == tree_bytes(source)

    final = transfer({"src_path": src, "dest_host": SRC_HOST, "dest_path": dst})
    assert_ok(final)
    assert final["plan"]["bytes"] == 0 and final["plan"]["files"] == 0, final["plan"]
    assert_same_tree(SRC_HOST, src, SRC_HOST, dst)
