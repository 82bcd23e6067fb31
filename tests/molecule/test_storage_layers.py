"""Layer 2 and 4 invariants on the molecule hosts, read with testinfra.

verify runs twice: after converge and again after side_effect restarted the hosts, so these
also prove that datasets, the ramdisk and its ordering come back at boot with no hand work.
"""

import pytest

CLUSTER_ROOT = "/srv/kind"
WORKLOAD_ROOT = "/srv/kind/solana"
RAMDISK = "/srv/kind/solana/ramdisk"
DATASETS = {
    "/srv/kind": "lab/DATA/srv/kind",
    "/srv/kind/solana": "lab/DATA/srv/kind/solana",
    "/srv/kind/solana/ledger": "lab/DATA/srv/kind/solana/ledger",
    "/srv/kind/solana/snapshots": "lab/DATA/srv/kind/solana/snapshots",
    "/srv/kind/solana/log": "lab/DATA/srv/kind/solana/log",
}


@pytest.mark.parametrize(("path", "dataset"), sorted(DATASETS.items()))
def test_dataset_mounted(host, path, dataset):
    mount = host.mount_point(path)
    assert mount.exists, f"{path} is not a mount point"
    assert mount.filesystem == "fuse.zfs"
    assert mount.device == dataset
    assert host.run(f"zfs get -H -o value mountpoint {dataset}").stdout.strip() == path


def test_ramdisk_is_tmpfs_of_its_size(host):
    mount = host.mount_point(RAMDISK)
    assert mount.exists
    assert mount.filesystem == "tmpfs"
    size_kib = host.run(f"df --output=size -k {RAMDISK}").stdout.split()[-1]
    assert int(size_kib) == 64 * 1024


def test_ramdisk_fstab_line_orders_after_zfs(host):
    lines = [line.split() for line in host.file("/etc/fstab").content_string.splitlines()]
    entry = next(fields for fields in lines if len(fields) >= 4 and fields[1] == RAMDISK)
    assert entry[0] == "tmpfs"
    assert entry[2] == "tmpfs"
    options = entry[3].split(",")
    assert "size=64M" in options
    assert "x-systemd.requires=zfs-mount.service" in options


def test_ramdisk_mount_unit_requires_zfs_mount(host):
    unit = host.run("systemctl show -p Requires -p After srv-kind-solana-ramdisk.mount").stdout
    assert "zfs-mount.service" in unit


def test_srv_solana_is_not_the_data_path(host):
    # The runbook's trap: /srv/solana must not be where the data lives.
    assert not host.mount_point("/srv/solana").exists
