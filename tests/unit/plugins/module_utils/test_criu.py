"""Pure logic of plugins/module_utils/criu.py: options from mountinfo, versions, stats."""

import json
import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt
from tests.unit.fakes.criu_images import STATS_DUMP

CID = "4422447b02fb609b42c72388cf593c7acd30e6a75a482199fb6809b9f8fbf9d1"
# /proc/PID/mountinfo of a Docker 20.10 container (cgroup v1) with -v /tmp/ckx/bind:/data,
# as read on the test bed.
DOCKER_MOUNTINFO = f"""\
379 350 0:86 / / rw,relatime master:85 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/B
380 379 0:89 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
381 379 0:90 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
382 381 0:91 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
349 379 0:92 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
383 349 0:93 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
384 383 0:29 /docker/{CID} /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
389 383 0:34 /docker/{CID} /sys/fs/cgroup/freezer ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
393 381 0:88 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
394 381 0:94 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
395 379 254:0 /tmp/ckx/bind /data rw,relatime - ext4 /dev/vda rw,discard
396 379 254:0 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
398 379 254:0 /var/lib/docker/containers/{CID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
351 380 0:89 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
354 380 0:89 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
355 380 0:95 / /proc/acpi ro,relatime - tmpfs tmpfs ro
356 380 0:90 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
358 349 0:96 / /sys/firmware ro,relatime - tmpfs tmpfs ro
"""

# A kubelet pod under containerd (cgroup v2, hostPath with a space, /dev/null masks from the
# host's devtmpfs, a ZFS dataset mounted whole).
K8S_MOUNTINFO = """\
1200 1100 0:120 / / rw,relatime - overlay overlay rw,lowerdir=/a:/b
1201 1200 0:121 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1202 1200 0:122 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1203 1200 0:123 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1204 1203 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1205 1200 254:1 /srv/kind/solana/my\\040data /workspace rw,relatime - ext4 /dev/vdb rw
1206 1200 0:45 / /ledger rw,noatime - zfs biscayne/DATA/ledger rw,xattr
1207 1201 0:5 /null /proc/kcore rw,nosuid - devtmpfs udev rw,size=4096k
1208 1200 0:140 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw,size=1g
"""


def mount_points(mounts):
    return [m["mount_point"] for m in mounts]


def test_parse_mountinfo_fields_and_escapes():
    mounts = mnt.parse_mountinfo(K8S_MOUNTINFO)
    assert len(mounts) == 9
    workspace = next(m for m in mounts if m["mount_point"] == "/workspace")
    assert workspace["root"] == "/srv/kind/solana/my data"
    assert workspace["fstype"] == "ext4"
    assert workspace["device"] == "254:1"
    root = mounts[0]
    assert (root["mount_point"], root["fstype"]) == ("/", "overlay")


def test_docker_external_mounts_are_binds_from_outside():
    root, internal, external = criu.classify_mounts(mnt.parse_mountinfo(DOCKER_MOUNTINFO))
    assert root["fstype"] == "overlay"
    assert mount_points(external) == [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/freezer",
        "/data",
        "/etc/resolv.conf",
        "/etc/hosts",
    ]
    # virtual file systems from their root and binds of mounts inside the namespace stay internal
    for path in ("/proc", "/dev", "/dev/shm", "/proc/bus", "/proc/sys", "/proc/keys", "/sys/firmware"):
        assert path in mount_points(internal)


def test_k8s_external_mounts():
    _root, internal, external = criu.classify_mounts(mnt.parse_mountinfo(K8S_MOUNTINFO))
    # hostPath, a whole ZFS dataset (a disk file system), /dev/null mask from the host's devtmpfs
    assert mount_points(external) == ["/workspace", "/ledger", "/proc/kcore"]
    assert "/sys/fs/cgroup" in mount_points(internal)  # cgroup2 namespace root
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in mount_points(internal)


# A container with a HostToContainer (rslave) volume from a shared host directory, after the
# host mounted a tmpfs below that directory (as read on the test bed).
PROPAGATED_MOUNTINFO = """\
379 350 0:86 / / rw,relatime master:85 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/B
380 379 0:89 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
371 379 254:0 /srv/prop-test /x rw,relatime master:78 - ext4 /dev/vda rw,discard
319 371 0:88 / /x/sub rw,relatime master:102 - tmpfs tmpfs rw,size=16384k
"""
HOST_MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
304 27 254:0 /srv/prop-test /srv/prop-test rw,relatime shared:78 - ext4 /dev/vda rw,discard
330 304 0:88 / /srv/prop-test/sub rw,relatime shared:102 - tmpfs tmpfs rw,size=16384k
"""


def test_mounts_propagated_from_the_host_are_external_with_their_host_path():
    # CRIU refuses a tmpfs whose master is outside ("has unreachable sharing"); it is the host's.
    _root, internal, external = criu.classify_mounts(mnt.parse_mountinfo(PROPAGATED_MOUNTINFO))
    assert mount_points(external) == ["/x", "/x/sub"]
    assert all(m["propagated"] for m in external)
    assert mount_points(internal) == ["/proc"]
    host = mnt.parse_mountinfo(HOST_MOUNTINFO)
    assert [criu.host_path(m, host) for m in external] == ["/srv/prop-test", "/srv/prop-test/sub"]
    assert criu.host_path(dict(external[1], device="0:99"), host) is None


def test_external_mount_args_facts_and_auto():
    _root, _internal, external = criu.classify_mounts(mnt.parse_mountinfo(DOCKER_MOUNTINFO))
    args = criu.external_mount_args(external, "facts")
    assert args[:2] == ["--external", "mnt[/sys/fs/cgroup/cpu]:/sys/fs/cgroup/cpu"]
    assert "mnt[/data]:/data" in args
    assert len(args) == 2 * len(external)
    assert criu.external_mount_args(external, "auto", (4, 1, 1)) == ["--external", "mnt[]"]
    assert criu.external_mount_args(external, "auto", (2, 9)) == ["--ext-mount-map", "auto"]


def test_build_dump_args():
    argv = criu.build_dump_args(
        "criu",
        42,
        "/d",
        ["--external", "mnt[/data]:/data"],
        tcp_established=True,
        netns_inode="4026532339",
        plugin_dir="/usr/lib/criu",
    )
    assert argv[:6] == ["criu", "dump", "--tree", "42", "--images-dir", "/d"]
    for flag in ("--leave-running", "--manage-cgroups", "--tcp-established"):
        assert flag in argv
    assert "net[4026532339]:extRootNetNS" in argv
    assert argv[argv.index("--libdir") + 1] == "/usr/lib/criu"
    plain = criu.build_dump_args("criu", 42, "/d", [], leave_running=False, empty_netns=True)
    assert "--leave-running" not in plain
    assert plain[-2:] == ["--empty-ns", "net"]


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Version: 4.1.1\n", (4, 1, 1)),
        ("Version: 3.17.1\nGitID: v3.17.1\n", (3, 17, 1)),
        ("Version: 4.2\n", (4, 2)),
        ("Warn  (criu/kerndat.c:1234): Can't setup RLIMIT_NOFILE\nVersion: 4.0\n", (4, 0)),
    ],
)
def test_parse_version(text, version):
    assert criu.parse_version(text) == version


def test_parse_version_garbage():
    with pytest.raises(criu.CriuError, match="cannot read a CRIU version"):
        criu.parse_version("criu: command not found")


def test_check_version_refuses_3x_and_says_why():
    with pytest.raises(criu.CriuTooOld) as info:
        criu.check_version(lambda argv: (0, "Version: 3.17\n", ""), "/usr/sbin/criu")
    message = str(info.value)
    assert "3.17" in message
    assert ">= 4.0" in message
    assert "vDSO" in message
    assert "criu_path" in message
    assert criu.check_version(lambda argv: (0, "Version: 4.1.1\n", ""), "criu") == (4, 1, 1)
    with pytest.raises(criu.CriuNotFound, match="criu_path"):
        criu.check_version(lambda argv: (127, "", "not found"), "criu")


# `crit decode` printed this for STATS_DUMP.
STATS_JSON = {
    "magic": "STATS",
    "entries": [
        {
            "dump": {
                "freezing_time": 148,
                "frozen_time": 134993,
                "memdump_time": 2338,
                "memwrite_time": 1400,
                "pages_scanned": 723,
                "pages_skipped_parent": 0,
                "pages_written": 658,
                "irmap_resolve": 0,
                "pages_lazy": 0,
                "page_pipes": 8,
                "page_pipe_bufs": 8,
                "shpages_scanned": 0,
                "shpages_skipped_parent": 0,
                "shpages_written": 0,
            }
        }
    ],
}


def test_parse_stats_matches_crit():
    builtin = criu.parse_stats(STATS_DUMP)
    assert builtin == criu.parse_crit_stats(json.dumps(STATS_JSON))
    summary = criu.summarize_dump_stats(builtin)
    assert summary["frozen_time_us"] == 134993
    assert summary["pages_written"] == 658
    assert summary["memwrite_time_us"] == 1400


def test_parse_stats_rejects_other_files():
    with pytest.raises(criu.CriuError, match="too short"):
        criu.parse_stats(b"\x40\x59")
    with pytest.raises(criu.CriuError, match="not a CRIU stats file"):
        criu.parse_stats(bytes.fromhex("405910551111111100000000"))


def test_read_stats_prefers_crit_and_cross_checks(tmp_path):
    (tmp_path / "stats-dump").write_bytes(STATS_DUMP)
    stats, source, check = criu.read_stats(
        lambda argv: (0, json.dumps(STATS_JSON), ""), str(tmp_path), "crit"
    )
    assert (source, check) == ("crit", "match")
    assert stats["dump"]["pages_written"] == 658
    stats, source, check = criu.read_stats(None, str(tmp_path), None)
    assert source == "builtin"
    assert "crit not installed" in check
    stats, source, check = criu.read_stats(lambda argv: (1, "", "boom"), str(tmp_path), "crit")
    assert source == "builtin"
    assert "boom" in check


def crit_stub(images):
    """A run_command that answers `crit decode -i DIR/IMAGE` with the given decoded entries."""

    def run(argv):
        assert argv[:3] == ["crit", "decode", "-i"]
        name = os.path.basename(argv[3])
        if name not in images:
            return 1, "", "No such file: " + argv[3]
        return 0, json.dumps({"magic": name, "entries": images[name]}), ""

    return run


def test_crit_check_lists_the_plugins_a_restore_needs(tmp_path):
    pstree = [{"pid": 1, "ppid": 0, "threads": [1]}]
    with_plugin = {"pstree.img": pstree, "inventory.img": [{"plugins_entry": {"plugins": ["cuda_plugin"]}}]}
    check = criu.crit_check_images(crit_stub(with_plugin), "crit", str(tmp_path))
    assert check == {"checked": True, "tasks": 1, "root_pid_in_ns": 1, "plugins": ["cuda_plugin"]}
    # what CRIU 4.1.1 wrote on the test bed for a dump without plugins
    plain = {"pstree.img": pstree, "inventory.img": [{"img_version": 2, "plugins_entry": {}}]}
    assert criu.crit_check_images(crit_stub(plain), "crit", str(tmp_path))["plugins"] == []
    unchecked = criu.crit_check_images(None, None, str(tmp_path))
    assert unchecked == {"checked": False, "reason": "crit not installed"}


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ({}, "crit cannot read pstree.img"),
        ({"pstree.img": []}, "has no tasks"),
        ({"pstree.img": [{"pid": 1}]}, "crit cannot read inventory.img"),
    ],
)
def test_crit_check_refuses_an_unreadable_dump(tmp_path, images, expected):
    with pytest.raises(criu.CriuDumpFailed, match=expected):
        criu.crit_check_images(crit_stub(images), "crit", str(tmp_path))


def test_classify_dump_failure():
    assert (
        criu.classify_dump_failure("Error (criu/page-xfer.c): No space left on device", "", True)
        is criu.NoSpace
    )
    assert criu.classify_dump_failure("Error: can't seize", "", False) is criu.TargetGone
    assert criu.classify_dump_failure("Error: something", "", True) is criu.CriuDumpFailed
    detach = "Error (compel/src/lib/infect.c:418): Unable to detach from 22419: No such process"
    assert criu.classify_dump_failure(detach, "", True) is criu.TargetGone


def test_process_tree_and_descriptors_of_self():
    tree = criu.process_tree(os.getpid())
    assert tree[0] == os.getpid()
    assert len(criu.descriptors(os.getpid())) == 3
    assert criu.alive(os.getpid())
    assert not criu.alive(2**22 + 7)


def test_log_tail_shows_the_errors_a_message_repeated_in_a_row_once(tmp_path):
    log = tmp_path / "dump.log"
    lines = ["(00.1) Dumping 1"]
    lines += [
        f"(09.{n}) Error (criu/seize.c:335): zombie 7700 (comm workload) found while seizing"
        for n in range(9)
    ]
    lines += ["(10.0) Error (criu/cr-dump.c:1791): Timeout reached. Try to interrupt: 0"]
    lines += ["(10.1) Error (criu/seize.c:335): zombie 7700 (comm workload) found while seizing"]
    log.write_text("\n".join(lines) + "\n")
    assert criu.log_tail(str(log)) == (
        "(09.0) Error (criu/seize.c:335): zombie 7700 (comm workload) found while seizing [9 times]\n"
        "(10.0) Error (criu/cr-dump.c:1791): Timeout reached. Try to interrupt: 0\n"
        "(10.1) Error (criu/seize.c:335): zombie 7700 (comm workload) found while seizing"
    )


def test_log_tail_without_errors_is_the_logs_end_and_empty_without_a_log(tmp_path):
    log = tmp_path / "restore.log"
    log.write_text("".join(f"(00.{n}) step {n}\n" for n in range(20)))
    assert criu.log_tail(str(log), lines=2) == "(00.18) step 18\n(00.19) step 19"
    assert criu.log_tail(str(tmp_path / "missing.log")) == ""
