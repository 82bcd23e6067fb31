"""The files a restore opens again (module_utils/criu.reopened_files, checkpoint/reopened.py): read
from CRIU's files.img (a real one, written by CRIU 4.1.1 for a Docker container holding
/data/held open, and hand-made ones for the cases it lacks), mapped through the new container's
bind mounts, and checked on the host before a Docker restore makes anything."""

import io
import os
import shutil
import struct
import tarfile

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import (
    BadCheckpoint,
    containerd,
    kubelet,
    reopened,
)
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from tests.unit.fakes.containerd import FakeContainerd, containerd_proc, write_containerd_dump
from tests.unit.fakes.docker import FakeDockerAPI
from tests.unit.fakes.run import FakeRun

from .test_containerd import params as containerd_params
from .test_kubelet import FakeKube, kubelet_dump_with_cuda, kubelet_params
from .test_restore import restorer, write_dump

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "criu", "files.img")

# What crit decode -i files.img shows of the fixture's REG entries (name, size, mode), each path once.
FIXTURE_FILES = [
    ("/", None, 0o40755),
    ("/data/held", 100, 0o100644),
    ("/dev/null", None, 0o20666),
    ("/usr/bin/python3.11", 6834488, 0o100755),
    ("/usr/lib/locale/C.utf8/LC_CTYPE", 353616, 0o100644),
    ("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache", 27028, 0o100644),
    ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 215000, 0o100755),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", 1926232, 0o100755),
    ("/usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10", 174184, 0o100644),
    ("/usr/lib/x86_64-linux-gnu/libm.so.6", 911904, 0o100644),
    ("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", 121280, 0o100644),
]


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, value):
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def image(magic, entries):
    body = b"".join(struct.pack("<I", len(entry)) + entry for entry in entries)
    return struct.pack("<II", criu.IMG_COMMON_MAGIC, magic) + body


def reg_file(file_id, name, size=None, mode=0o100644, fd_type=criu.FD_TYPE_REG):
    """A file_entry (images/fdinfo.proto) holding a reg_file_entry (images/regfile.proto)."""
    reg = field(1, file_id) + field(2, 0) + field(3, 0) + field(6, name.encode())
    reg += (field(8, size) if size is not None else b"") + field(10, mode)
    return field(1, fd_type) + field(2, file_id) + field(3, reg)


def test_the_files_of_a_real_dump_as_crit_reads_them(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "files.img")
    found = reopened.in_dump_dir(tmp_path)
    assert [(f["path"], f["size"], f["mode"]) for f in found] == FIXTURE_FILES


def test_files_criu_brings_back_itself_are_left_out(tmp_path):
    entries = [
        reg_file(1, "/data/status.json", size=4096),
        reg_file(2, "/data/gone.tmp", size=10),  # deleted after the dump began: a ghost file
        reg_file(3, "/data/train.log", size=None),  # O_WRONLY|O_APPEND: CRIU records no size
        reg_file(4, "pipe:[1]", size=None),  # a path CRIU does not open (no leading /)
        reg_file(5, "/data/socket", fd_type=2),  # not REG
        reg_file(6, "/data/status.json", size=4096),  # the same path again
    ]
    (tmp_path / "files.img").write_bytes(image(criu.FILES_MAGIC, entries))
    ghost = field(1, 2) + field(2, 7) + field(3, 1)  # orig_id 2 -> remap_id 7, GHOST
    (tmp_path / "remap-fpath.img").write_bytes(image(criu.REMAP_FPATH_MAGIC, [ghost]))
    assert reopened.in_dump_dir(tmp_path) == [
        {"path": "/data/status.json", "size": 4096, "mode": 0o100644},
        {"path": "/data/train.log", "size": None, "mode": 0o100644},
    ]


def test_no_files_img_is_nothing_to_check(tmp_path):
    assert reopened.in_dump_dir(tmp_path) == []


@pytest.mark.parametrize(
    "data",
    [
        image(criu.REMAP_FPATH_MAGIC, []),  # another image's magic
        image(criu.FILES_MAGIC, [reg_file(1, "/x")])[:-3],  # cut inside the last entry
        image(criu.FILES_MAGIC, [])[:6],
        image(criu.FILES_MAGIC, [b"\x0f\x01"]),  # wire type 7
        image(criu.FILES_MAGIC, [field(1, 1) + field(3, 5)]),  # reg a number, not a message
    ],
    ids=["wrong-magic", "truncated-entry", "truncated-header", "bad-protobuf", "reg-not-a-message"],
)
def test_a_damaged_files_img_is_a_damaged_dump(data):
    with pytest.raises(criu.CriuError, match="damaged"):
        criu.reopened_files(data)


def test_docker_binds_are_host_paths_only():
    create = {
        "HostConfig": {
            "Binds": ["/srv/data:/data:rw,rslave", "/srv/logs:/logs", "named-volume:/cache"],
            "Mounts": [
                {"Type": "bind", "Source": "/srv/models", "Target": "/models"},
                {"Type": "volume", "Source": "vol", "Target": "/vol"},
            ],
        }
    }
    assert reopened.docker_binds(create) == [
        ("/data", "/srv/data"),
        ("/logs", "/srv/logs"),
        ("/models", "/srv/models"),
    ]
    assert reopened.docker_binds({}) == []


def test_oci_binds_are_the_specs_bind_mounts():
    spec = {
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/var/lib/kubelet/pods/u/volumes/data"},
            {
                "destination": "/etc/hosts",
                "type": "none",
                "source": "/var/lib/pod/hosts",
                "options": ["rbind", "ro"],
            },
            {"destination": "/models", "source": "/srv/models", "options": ["bind"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid"]},
            {"destination": "/odd", "type": "bind", "source": "relative/path"},
        ]
    }
    assert reopened.oci_binds(spec) == [
        ("/data", "/var/lib/kubelet/pods/u/volumes/data"),
        ("/etc/hosts", "/var/lib/pod/hosts"),
        ("/models", "/srv/models"),
    ]
    assert reopened.oci_binds(None) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/held", "/srv/data/held"),
        ("/data", "/srv/data"),
        ("/data/ramdisk/x", "/run/ram/x"),  # the deepest bind holds it
        ("/database/x", None),  # a prefix of the name is not a parent directory
        ("/usr/lib/libc.so.6", None),  # the container's own file system
    ],
)
def test_host_path_through_the_deepest_bind(path, expected):
    binds = [("/data", "/srv/data"), ("/data/ramdisk/", "/run/ram")]
    assert reopened.host_path(path, binds) == expected


def test_changes_name_what_is_gone_or_other(tmp_path):
    (tmp_path / "same").write_bytes(b"x" * 10)
    (tmp_path / "grown").write_bytes(b"x" * 20)
    (tmp_path / "chmod").write_bytes(b"x" * 10)
    os.chmod(tmp_path / "chmod", 0o600)
    (tmp_path / "log").write_bytes(b"x" * 99)
    files = [
        {"path": "/data/same", "size": 10, "mode": 0o100644},
        {"path": "/data/grown", "size": 10, "mode": 0o100644},
        {"path": "/data/chmod", "size": 10, "mode": 0o100644},
        {"path": "/data/log", "size": None, "mode": 0o100644},  # appended to: CRIU does not check
        {"path": "/data/gone", "size": 10, "mode": 0o100644},
        {"path": "/data", "size": None, "mode": 0o40755},
        {"path": "/usr/bin/python3", "size": 1, "mode": 0o100755},  # not on a bind: not checked here
    ]
    os.chmod(tmp_path, 0o755)
    for name in ("same", "grown", "log"):
        os.chmod(tmp_path / name, 0o644)
    found = reopened.changes(files, [("/data", str(tmp_path))])
    assert found == [
        f"/data/grown (on the host {tmp_path}/grown) is 20 bytes, it was 10",
        f"/data/chmod (on the host {tmp_path}/chmod) has mode 0o100600, it had 0o100644",
        f"/data/gone (on the host {tmp_path}/gone) is gone",
    ]


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_docker_restore_refuses_a_dump_whose_open_file_changed(tmp_path, check_mode):
    source = tmp_path / "source"
    source.mkdir()
    (source / "status.json").write_bytes(b"{}" * 10)
    checkpoint = write_dump(tmp_path, binds=(f"{source}:/data",))
    held = [reg_file(1, "/data/status.json", size=4096), reg_file(2, "/usr/bin/python3", size=1)]
    with open(os.path.join(checkpoint, "files.img"), "wb") as handle:
        handle.write(image(criu.FILES_MAGIC, held))
    docker = FakeDockerAPI(tmp_path / "docker")
    worker, run, mounted = restorer(tmp_path, checkpoint, docker, check_mode=check_mode)
    with pytest.raises(BadCheckpoint) as caught:
        worker.run_state()
    assert (
        f"/data/status.json (on the host {source}/status.json) is 20 bytes, it was 4096. " in caught.value.msg
    )
    assert "python3" not in caught.value.msg  # the container's own file system is not the host's
    assert caught.value.msg.endswith("Nothing was created")
    assert "create" not in docker.verbs() and run.calls == [] and mounted == set()

    # put back as it was at the dump: the restore goes on
    (source / "status.json").write_bytes(b" " * 4096)
    assert worker.run_state()["changed"] is True
    assert ("create" in docker.verbs()) is not check_mode


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_containerd_restore_refuses_a_dump_whose_open_file_is_gone(tmp_path, check_mode):
    volume = tmp_path / "volume"
    volume.mkdir()
    held = image(criu.FILES_MAGIC, [reg_file(1, "/data/status.json", size=4096)])
    dump = write_containerd_dump(
        tmp_path / "counter-20250101T000000.000Z",
        criu_files={"files.img": held, "pages-1.img": b"\0" * 4096},
        binds=[["/data", str(volume)]],
    )
    proc, _temp = containerd_proc(tmp_path)
    api = FakeContainerd()
    run = FakeRun()
    with pytest.raises(BadCheckpoint) as caught:
        containerd.restore(containerd_params(checkpoint=dump), check_mode, run, proc=proc, api=api)
    assert f"/data/status.json (on the host {volume}/status.json) is gone. " in caught.value.msg
    assert api.changes() == []  # nothing made

    (volume / "status.json").write_bytes(b" " * 4096)
    restored = containerd.restore(containerd_params(checkpoint=dump), check_mode, run, proc=proc, api=api)
    assert restored["changed"] and (api.changes() != []) is not check_mode


def test_hostpath_binds_of_the_checkpointed_container():
    spec = {
        "volumes": [
            {"name": "ledger", "hostPath": {"path": "/srv/ledger/", "type": "Directory"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "models", "hostPath": {"path": "/srv/models"}},
        ],
        "containers": [
            {
                "name": "trainer",
                "volumeMounts": [
                    {"name": "ledger", "mountPath": "/data"},
                    {"name": "scratch", "mountPath": "/scratch"},  # the pod's own: a new pod has another
                    {"name": "models", "mountPath": "/models/current", "subPath": "v2"},
                ],
            },
            {"name": "sidecar", "volumeMounts": [{"name": "models", "mountPath": "/m"}]},
        ],
    }
    assert reopened.hostpath_binds(spec, "trainer") == [
        ("/data", "/srv/ledger"),
        ("/models/current", "/srv/models/v2"),
    ]
    assert reopened.hostpath_binds({}, "trainer") == []


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_kubelet_restore_refuses_a_dump_whose_open_file_is_gone(tmp_path, check_mode):
    volume = tmp_path / "ledger"
    volume.mkdir()
    archive = tmp_path / "checkpoint.tar"
    held = image(criu.FILES_MAGIC, [reg_file(1, "/data/tower.bin", size=64)])
    with tarfile.open(archive, "w") as tar:
        for name, data in {"checkpoint/files.img": held, "checkpoint/pages-1.img": b"\0" * 4096}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dump_dir, fake_ctr = kubelet_dump_with_cuda(tmp_path, archive)
    pod_spec = {
        "volumes": [{"name": "ledger", "hostPath": {"path": str(volume)}}],
        "containers": [{"name": "trainer", "volumeMounts": [{"name": "ledger", "mountPath": "/data"}]}],
    }
    mf.write(dump_dir, dict(mf.load(dump_dir), pod_spec=pod_spec, gpu={"path": "none"}))
    kube = FakeKube()
    params = kubelet_params(
        None, tmp_path / "dumps", state="restored", checkpoint=dump_dir, new_pod="trainer-r"
    )
    proc, _temp = containerd_proc(tmp_path)
    with pytest.raises(BadCheckpoint) as caught:
        kubelet.restore(params, check_mode, lambda: kube, FakeRun(true=fake_ctr), proc=proc)
    assert f"/data/tower.bin (on the host {volume}/tower.bin) is gone. " in caught.value.msg
    assert kube.created == []
