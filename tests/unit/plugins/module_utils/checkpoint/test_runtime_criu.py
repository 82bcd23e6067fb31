"""The CRIU a runtime restores with (the criu on its containerd's PATH) and the refusal of a dump
written by a newer CRIU release, with a /proc of the test (tests/unit/fakes/containerd.py)."""

import re

import pytest

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint, runtime_criu

from ....fakes.containerd import containerd_proc
from ....fakes.run import FakeRun


def criu_answering(version):
    return FakeRun(criu=lambda argv, **_kwargs: (0, f"Version: {version}\n", ""))


def test_the_criu_on_containerds_path_in_its_root_and_its_version(tmp_path):
    proc, _temp = containerd_proc(
        tmp_path, b"HOME=/root\0PATH=relative:/usr/local/sbin:/usr/bin\0", criu=True
    )
    run = criu_answering("3.17.1")
    assert runtime_criu.containerd_crius(run, proc) == [
        {"pid": 4100, "path": "/usr/bin/criu", "version": (3, 17, 1)}
    ]
    # run through containerd's root, as this process reaches it
    assert run.calls[0][0] == [str(tmp_path / "proc" / "4100" / "root" / "usr" / "bin" / "criu"), "--version"]


@pytest.mark.parametrize(
    ("environ", "answer"),
    [(b"HOME=/root\0", None), (b"PATH=/usr/bin\0", (1, "", "cannot execute binary file"))],
    ids=["no-path", "criu-does-not-answer"],
)
def test_an_unknown_criu_is_not_judged(tmp_path, environ, answer):
    proc, _temp = containerd_proc(tmp_path, environ, criu=True)
    run = FakeRun(criu=lambda argv, **_kwargs: answer)
    found = runtime_criu.containerd_crius(run, proc)
    assert [c["version"] for c in found] == [None]
    runtime_criu.refuse_older("/dumps/app-1", "4.1.1", found, "containerd's")  # nothing raised


def test_the_containerd_serving_the_address_is_the_one_asked(tmp_path):
    containerd_proc(tmp_path, criu=True, pid="4100", address="/run/containerd/containerd.sock")
    proc, _temp = containerd_proc(
        tmp_path, criu=True, pid="4200", address="/run/k3s/containerd/containerd.sock"
    )
    run = criu_answering("4.1")
    assert [
        c["pid"] for c in runtime_criu.containerd_crius(run, proc, "/run/k3s/containerd/containerd.sock")
    ] == [4200]
    # an address no process is found serving: every containerd
    everyone = runtime_criu.containerd_crius(run, proc, "/run/other.sock")
    assert sorted(c["pid"] for c in everyone) == [4100, 4200]


def test_no_proc_to_read_finds_no_containerd(tmp_path):
    assert runtime_criu.containerd_crius(FakeRun(), str(tmp_path / "no-proc")) == []


def known(*versions):
    return [{"pid": 1, "path": f"/opt/criu-{i}/criu", "version": v} for i, v in enumerate(versions)]


@pytest.mark.parametrize(
    ("dumped_by", "crius"),
    [
        ("4.1.1", known((4, 1, 0))),  # the same release: patch levels do not change images
        ("4.0", known((4, 1, 1))),  # a newer CRIU reads older images
        ("4.1.1", known((3, 17), (4, 2))),  # one of them can
        ("4.1.1", []),  # no containerd found: runc's own failure will say it
        (None, known((3, 17))),  # a dump that does not record its CRIU
        ("not a version", known((3, 17))),
    ],
)
def test_a_restore_goes_on_unless_every_known_criu_is_older(dumped_by, crius):
    runtime_criu.refuse_older("/dumps/app-1", dumped_by, crius, "containerd's")


def test_every_older_criu_is_named_once():
    same = [{"pid": pid, "path": "/usr/sbin/criu", "version": (3, 17)} for pid in (1, 2)]
    with pytest.raises(BadCheckpoint) as caught:
        runtime_criu.refuse_older("/dumps/app-1", "4.1", [*same, *known((4, 0, 2))], "dockerd's containerd's")
    assert "is older: /opt/criu-0/criu (CRIU 4.0.2), /usr/sbin/criu (CRIU 3.17), the criu on dockerd's" in (
        caught.value.msg
    )


def test_a_dump_of_a_newer_criu_release_is_refused_with_the_fix():
    with pytest.raises(BadCheckpoint) as caught:
        runtime_criu.refuse_older("/dumps/app-1", "4.1.1", known((3, 17, 1)), "containerd's")
    assert caught.value.msg == (
        "/dumps/app-1 was dumped by CRIU 4.1.1, and the CRIU that would restore it is older: "
        "/opt/criu-0/criu (CRIU 3.17.1), the criu on containerd's PATH, which runc runs. CRIU reads the "
        "images of its own and older releases only: install CRIU >= 4.1 on that PATH, or restore on a "
        "host that has one. Nothing was created"
    )
    assert re.search(r"install CRIU >= 4\.1 ", caught.value.msg)


def test_a_manifest_that_names_no_criu_asks_no_runtime(tmp_path):
    proc, _temp = containerd_proc(tmp_path, criu=True)
    run = criu_answering("3.17")
    runtime_criu.refuse_unreadable(
        "/dumps/app-1", {"criu": {}}, run, proc, address=None, where="containerd's"
    )
    assert run.calls == []
    with pytest.raises(BadCheckpoint, match=r"dumped by CRIU 4\.1\.1, .* /usr/bin/criu \(CRIU 3\.17\)"):
        runtime_criu.refuse_unreadable(
            "/dumps/app-1", {"criu": {"version": "4.1.1"}}, run, proc, address=None, where="containerd's"
        )
