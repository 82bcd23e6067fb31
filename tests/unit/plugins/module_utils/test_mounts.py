"""Unit tests for module_utils/mounts (behind storage_info): mountinfo and fstab parsing,
path classification."""

import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import mounts as sf

# The kind validator host's shape: OpenZFS datasets, a tmpfs ramdisk on the workload dataset,
# and zfs-fuse's fuse.zfs type for one more dataset.
MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
60 22 0:50 / /srv rw,relatime shared:30 - zfs biscayne/DATA/srv rw,xattr,posixacl
61 60 0:51 / /srv/kind rw,relatime shared:31 - zfs biscayne/DATA/srv/kind rw,xattr,posixacl
62 61 0:52 / /srv/kind/solana rw,relatime shared:32 - zfs biscayne/DATA/srv/kind/solana rw,xattr
63 62 0:53 / /srv/kind/solana/ramdisk rw,nosuid,nodev,noatime shared:33 - tmpfs tmpfs rw,size=1073741824k
70 22 0:72 / /tank/fuse rw,relatime - fuse.zfs strata-testbed/fuse rw,user_id=0,group_id=0,allow_other
71 22 0:80 / /mnt/with\\040space rw - ext4 /dev/vdb1 rw
72 22 0:81 / /srv/kind/solana/ramdisk rw - tmpfs tmpfs rw,size=2048k
"""

FSTAB = """\
# /etc/fstab: static file system information.
UUID=abcd / ext4 errors=remount-ro 0 1
tmpfs /srv/kind/solana/ramdisk tmpfs \
rw,noatime,size=1024G,x-systemd.requires=zfs-mount.service,x-systemd.after=zfs-mount.service 0 0
/dev/vdb1 /mnt/with\\040space ext4 defaults,nofail,x-systemd.requires-mounts-for=/srv 0 2

LABEL=x /noopts ext4
"""


def test_parse_mountinfo_fields():
    mounts = sf.parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 8
    ramdisk = mounts[4]
    assert ramdisk["mount_point"] == "/srv/kind/solana/ramdisk"
    assert (ramdisk["major"], ramdisk["minor"]) == (0, 53)
    assert ramdisk["fstype"] == "tmpfs"
    assert ramdisk["super_options"] == ["rw", "size=1073741824k"]
    assert mounts[0]["optional"] == ["shared:1"]
    assert mounts[5]["fstype"] == "fuse.zfs"
    assert mounts[5]["optional"] == []
    assert mounts[6]["mount_point"] == "/mnt/with space"


def test_parse_fstab_and_systemd_options():
    entries = sf.parse_fstab(FSTAB)
    assert [e["mount_point"] for e in entries] == [
        "/",
        "/srv/kind/solana/ramdisk",
        "/mnt/with space",
        "/noopts",
    ]
    ramdisk = entries[1]
    assert ramdisk["source"] == "tmpfs"
    assert ramdisk["fstype"] == "tmpfs"
    assert "size=1024G" in ramdisk["options"]
    assert ramdisk["systemd"]["requires"] == ["zfs-mount.service"]
    assert ramdisk["systemd"]["after"] == ["zfs-mount.service"]
    assert ramdisk["systemd"]["nofail"] is False
    other = entries[2]
    assert other["systemd"]["requires_mounts_for"] == ["/srv"]
    assert other["systemd"]["nofail"] is True
    assert other["passno"] == 2
    assert entries[3]["options"] == ["defaults"]


@pytest.mark.parametrize(
    "options, expected",
    [
        (["rw", "size=16384k"], 16 * 1024 * 1024),
        (["size=1g"], 1024**3),
        (["size=4096"], 4096),
        (["size=50%"], None),
        (["rw"], None),
    ],
)
def test_option_size(options, expected):
    assert sf.option_size(options) == expected


def test_unescape():
    assert sf.unescape("/a\\040b\\011c") == "/a b\tc"
    assert sf.unescape("/plain") == "/plain"


class FakeStat:
    def __init__(self, devices):
        self.devices = devices

    def __call__(self, path):
        if path not in self.devices:
            raise OSError(2, "No such file or directory", path)
        major, minor = self.devices[path]
        return os.stat_result((0o40755, 0, os.makedev(major, minor), 1, 0, 0, 0, 0, 0, 0))


def statvfs(_path):
    return os.statvfs_result((4096, 4096, 512, 0, 0, 0, 0, 0, 0, 255))


DEVICES = {
    "/srv": (0, 50),
    "/srv/solana": (0, 50),  # the trap: a plain directory on the parent dataset
    "/srv/kind": (0, 51),
    "/srv/kind/solana": (0, 52),
    "/srv/kind/solana/ramdisk": (0, 81),  # the topmost of two stacked tmpfs mounts
    "/tank/fuse": (0, 72),
    "/var/lib": (254, 0),
}


def describe(path):
    return sf.describe_path(
        path,
        sf.parse_mountinfo(MOUNTINFO),
        sf.parse_fstab(FSTAB),
        stat=FakeStat(DEVICES),
        statvfs=statvfs,
    )


def test_zfs_dataset_path():
    info = describe("/srv/kind/solana")
    assert info["kind"] == "zfs"
    assert info["dataset"] == "biscayne/DATA/srv/kind/solana"
    assert info["parent_dataset"] == "biscayne/DATA/srv/kind"
    assert info["mount_point"] == "/srv/kind/solana"
    assert info["fstab"] is None


def test_zfs_fuse_dataset_path():
    info = describe("/tank/fuse")
    assert info["kind"] == "zfs"
    assert info["fstype"] == "fuse.zfs"
    assert info["dataset"] == "strata-testbed/fuse"
    assert info["parent_dataset"] == "strata-testbed"


def test_tmpfs_topmost_mount_and_fstab():
    info = describe("/srv/kind/solana/ramdisk")
    assert info["kind"] == "tmpfs"
    assert info["device"] == "0:81"
    assert info["size_bytes"] == 512 * 4096
    assert "size=2048k" in info["mount_options"]
    assert info["fstab"]["fstype"] == "tmpfs"
    assert info["fstab"]["systemd"]["requires"] == ["zfs-mount.service"]


def test_plain_directory_on_parent_dataset_is_the_trap():
    info = describe("/srv/solana")
    assert info["kind"] == "directory"
    assert info["parent_mount"]["mount_point"] == "/srv"
    assert info["parent_mount"]["dataset"] == "biscayne/DATA/srv"
    assert info["dataset"] == "biscayne/DATA/srv"


def test_directory_on_other_filesystem():
    info = describe("/var/lib")
    assert info["kind"] == "directory"
    assert info["parent_mount"]["mount_point"] == "/"
    assert info["parent_mount"]["fstype"] == "ext4"
    assert info["dataset"] is None


def test_missing_path_has_every_key():
    info = describe("/srv/kind/solana/nothing-here")
    assert info["kind"] == "missing"
    assert set(info) >= {"dataset", "mount_point", "size_bytes", "fstab", "parent_mount"}
    assert info["dataset"] is None
    assert info["mount_point"] is None


def test_describe_paths_reads_given_files(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB)
    facts = sf.describe_paths([str(tmp_path)], str(mountinfo), str(fstab))
    # tmp_path lives on a real mount that this fake mountinfo does not list
    assert facts[str(tmp_path)]["kind"] in ("other", "directory")


def test_describe_paths_missing_fstab_is_empty(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    facts = sf.describe_paths(["/"], str(mountinfo), str(tmp_path / "no-fstab"))
    assert facts["/"]["fstab"] is None


def test_describe_paths_refuses_relative_paths(tmp_path):
    with pytest.raises(sf.MountsError, match="paths must be absolute; got srv, kind"):
        sf.describe_paths(["/srv", "srv", "kind"], str(tmp_path / "mountinfo"))


def test_describe_paths_without_mountinfo(tmp_path):
    with pytest.raises(sf.MountsError, match="needs Linux with /proc mounted"):
        sf.describe_paths(["/srv"], str(tmp_path / "no-mountinfo"))


def test_peer_groups_are_parsed():
    mounts = sf.parse_mountinfo(MOUNTINFO)
    assert (mounts[1]["shared"], mounts[1]["master"]) == (30, None)
    assert (mounts[5]["shared"], mounts[5]["master"]) == (None, None)
    slave = sf.parse_mountinfo("371 350 254:0 /srv/x /x rw master:78 - ext4 /dev/vda rw\n")[0]
    assert (slave["shared"], slave["master"]) == (None, 78)


def test_shared_submounts_are_what_a_restore_would_unmount_on_the_host():
    # The validator host: datasets and the ramdisk under /srv/kind, all shared (systemd).
    mounts = sf.parse_mountinfo(MOUNTINFO)
    below = [m["mount_id"] for m in sf.shared_submounts("/srv/kind", mounts)]
    assert below == [62, 63, 72]  # 72: a second ramdisk stacked on the first, its parent the shared root
    assert sf.shared_submounts("/srv/kind/solana/ramdisk", mounts) == []  # nothing below it
    # the same tree with private parents: a detach of the copy stays in the copy
    private = sf.parse_mountinfo(MOUNTINFO.replace(" shared:", " private:"))
    assert sf.shared_submounts("/srv/kind", private) == []


def test_mount_points_now_sees_binds_of_the_same_file_system(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    bind = "90 22 254:0 /srv/data /run/strata-ops/restore/app/0 rw - ext4 /dev/vda rw\n"
    mountinfo.write_text(MOUNTINFO + bind)
    points = sf.mount_points_now(str(mountinfo))
    assert "/run/strata-ops/restore/app/0" in points  # os.path.ismount would say False here
    assert "/mnt/with space" in points


# -- what a new dataset or tmpfs would hide or displace (layers 2 and 4) ------------------------

HELD = {"/srv/solana": ["validator-keypair.json"], "/var/lib": [".hidden"], "/srv/kind/empty": []}
DEVICES["/srv/kind/empty"] = (0, 51)


def listdir(path):
    if path == "/srv/locked":
        raise PermissionError(13, "Permission denied", path)
    return HELD[path]


ZFS = "zfs"


@pytest.mark.parametrize(
    "path, want, conflict",
    [
        # the /srv/solana trap and layer 2's populated /srv/kind on the root file system
        (
            "/srv/solana",
            {"kind": ZFS, "dataset": "biscayne/DATA/srv/solana"},
            "/srv/solana is a plain directory with files on biscayne/DATA/srv"
            " but should be the ZFS dataset biscayne/DATA/srv/solana",
        ),
        (
            "/var/lib",
            {"kind": ZFS, "dataset": "biscayne/DATA/var"},
            "/var/lib is a plain directory with files on / but should be the ZFS dataset biscayne/DATA/var",
        ),
        (
            "/srv/solana",
            {"kind": "tmpfs"},
            "/srv/solana is a plain directory with files on biscayne/DATA/srv"
            " that a tmpfs mounted there would hide",
        ),
        ("/srv/kind/empty", {"kind": ZFS, "dataset": "biscayne/DATA/srv/kind/empty"}, None),
        ("/srv/kind/solana/nothing-here", {"kind": ZFS, "dataset": "biscayne/x"}, None),
        ("/srv/kind/solana", {"kind": ZFS, "dataset": "biscayne/DATA/srv/kind/solana"}, None),
        (
            "/srv/kind/solana",
            {"kind": ZFS, "dataset": "biscayne/DATA/srv/kind/other"},
            "/srv/kind/solana is the ZFS dataset biscayne/DATA/srv/kind/solana but should be"
            " biscayne/DATA/srv/kind/other",
        ),
        (
            "/srv/kind/solana/ramdisk",
            {"kind": ZFS, "dataset": "biscayne/DATA/srv/kind/solana/ramdisk"},
            "/srv/kind/solana/ramdisk is a tmpfs mount but should be the ZFS dataset"
            " biscayne/DATA/srv/kind/solana/ramdisk",
        ),
        ("/srv/kind/solana/ramdisk", {"kind": "tmpfs"}, None),
        (
            "/tank/fuse",
            {"kind": "tmpfs"},
            "/tank/fuse is already used by fuse.zfs strata-testbed/fuse but should be a tmpfs",
        ),
    ],
)
def test_expectation_conflict(path, want, conflict):
    assert sf.expectation_conflict(describe(path), want, listdir) == conflict


def test_a_directory_that_cannot_be_listed_is_a_conflict():
    DEVICES["/srv/locked"] = (0, 50)
    try:
        conflict = sf.expectation_conflict(describe("/srv/locked"), {"kind": ZFS, "dataset": "b/x"}, listdir)
    finally:
        del DEVICES["/srv/locked"]
    assert conflict == (
        "/srv/locked is a plain directory on biscayne/DATA/srv that cannot be listed (Permission denied)"
        " but should be the ZFS dataset b/x"
    )


def test_storage_report_inspects_expected_paths_too(tmp_path):
    populated, empty = tmp_path / "kind", tmp_path / "empty"
    populated.mkdir()
    empty.mkdir()
    (populated / ".keep").write_text("x")
    report = sf.storage_report(
        ["/"],
        [
            {"path": str(populated), "kind": ZFS, "dataset": "lab/DATA/srv/kind"},
            {"path": str(empty), "kind": "tmpfs", "dataset": None},
        ],
        fstab_path=str(tmp_path / "fstab"),
    )
    assert set(report["paths"]) == {"/", str(populated), str(empty)}
    (conflict,) = report["conflicts"]  # from this machine's own mount table
    assert conflict.startswith(f"{populated} is a plain directory with files on ")
    assert conflict.endswith(" but should be the ZFS dataset lab/DATA/srv/kind")


@pytest.mark.parametrize(
    ("meminfo", "expected"),
    [
        ("MemTotal:       24576000 kB\nMemFree:         1000 kB\n", 24576000 * 1024),
        ("MemFree:         1000 kB\n", None),
        ("MemTotal:       lots kB\n", None),
        ("MemTotal:       24576000 MB\n", None),
        ("", None),
    ],
)
def test_memory_total_is_memtotal_in_bytes_or_none(tmp_path, meminfo, expected):
    path = tmp_path / "meminfo"
    path.write_text(meminfo)
    assert sf.memory_total_bytes(str(path)) == expected


def test_memory_total_of_a_missing_meminfo_is_none(tmp_path):
    assert sf.memory_total_bytes(str(tmp_path / "none")) is None


def test_memory_total_of_this_host_is_what_proc_says():
    with open("/proc/meminfo") as handle:
        kib = int(next(line for line in handle if line.startswith("MemTotal:")).split()[1])
    assert sf.memory_total_bytes() == kib * 1024
