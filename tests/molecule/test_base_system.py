"""Layer 1 invariants on the molecule hosts, read with testinfra (no Ansible involved)."""

import json

import pytest

PACKAGES = [
    "docker.io",
    "rsync",
    "aria2",
    "zstd",
    "lz4",
    "curl",
    "jq",
    "python3-tomlkit",
    "python3-grpcio",
    "zfs-fuse",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_installed(host, name):
    assert host.package(name).is_installed


def test_docker_daemon_config(host):
    config = host.file("/etc/docker/daemon.json")
    assert config.mode == 0o644
    data = json.loads(config.content_string)
    assert data["live-restore"] is True
    assert data["log-opts"] == {"max-size": "100m", "max-file": "3"}


def test_sysctl_persisted(host):
    lines = host.file("/etc/sysctl.d/90-strata-ops.conf").content_string.splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line)
    assert settings["vm.max_map_count"] == "1000000"
    assert settings["fs.inotify.max_user_watches"] == "524288"


def test_systemd_running(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state == "running", host.run("systemctl --failed --no-legend").stdout


def test_zfs_fuse_answers(host):
    assert host.service("zfs-fuse").is_running
    assert host.run("zpool list").rc == 0


def test_criu_is_at_least_4_1_and_leaves_the_host_glibc_alone(host):
    # bookworm's criu 3.17 fails on kernels >= 6.13: layer 1 unpacks trixie's beside its glibc.
    version = host.check_output("criu --version")
    major_minor = tuple(int(p) for p in version.split("Version:")[1].split()[0].split(".")[:2])
    assert major_minor >= (4, 1), version
    assert host.file("/usr/local/sbin/criu").mode == 0o755
    assert host.package("libc6").version.startswith("2.36"), "the host's glibc must stay bookworm's"
    assert not host.package("criu").is_installed


def test_crit_matches_criu_and_decodes_images(host):
    # pod_checkpoint checks its dumps with crit: same version as criu, protobuf from the host.
    criu_version = host.check_output("criu --version").split("Version:")[1].split()[0]
    assert host.check_output("crit --version").strip() == criu_version
    assert host.file("/usr/local/sbin/crit").mode == 0o755
    dump = host.run(
        "set -e; d=$(mktemp -d); setsid sleep 60 </dev/null >/dev/null 2>&1 & pid=$!; "
        "criu dump --tree $pid -D $d --shell-job --leave-running -o dump.log; kill $pid; "
        "crit decode -i $d/pstree.img; rm -rf $d"
    )
    assert dump.rc == 0, dump.stderr
    assert '"magic": "PSTREE"' in dump.stdout
