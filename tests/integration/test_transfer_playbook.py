"""playbooks/transfer.yml (the role strata.ops.data_transfer, entry points main and verify) between the
lab hosts, run with ansible-playbook as a user runs it: strata-lab-1 copies trees to strata-lab-2; with
two source hosts sharing one tree, both copy into strata-lab-1 (strata-lab-1 over ssh to itself).

Every copy is compared with its source on both hosts, entry by entry (type, content, size, mode, owner,
mtime in ns, symlink target, hard links). Everything the runs leave on the hosts lives under
/srv/it-transfer-pb (the role's state and manifest directories, the module payloads (TMPDIR), the
async job files and the remote temporary directory are pointed there) and is removed afterwards; the
lab hosts' root keys are authorized as the role would do it (idempotently). Progress lines are read
from the default callback's output; task results from the ansible.posix.json callback's document.
"""

import json
import os
import re
import uuid

import pytest

from .conftest import REPO
from .transfer_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .transfer_fixtures import (
    ANSIBLE_PLAYBOOK,
    DST_HOST,
    HOSTS,
    INVENTORY,
    MIB,
    SRC_HOST,
    assert_ok,
    assert_same_tree,
    callback_document,
    exists,
    make_shared_source,
    make_tree,
    prepare_lab,
    run_ansible,
    sh,
    shared_tree,
    small_files,
    tree_bytes,
)

pytestmark = pytest.mark.needs("docker")

ROOT = "/srv/it-transfer-pb"
STATE = f"{ROOT}/state"
MANIFESTS = f"{ROOT}/manifests"
TMP = f"{ROOT}/tmp"
PLAYBOOK = os.path.join(REPO, "playbooks", "transfer.yml")
# Everything a run writes on the hosts goes under ROOT (the lab hosts' defaults are in /var/lib and /root).
CONFINED = {
    "data_transfer_state_dir": STATE,
    "data_transfer_manifest_dir": MANIFESTS,
    "ansible_docker_extra_env": {"TMPDIR": TMP},
    "ansible_async_dir": f"{ROOT}/async",
    "ansible_remote_tmp": f"{ROOT}/remote-tmp",
}
# What the action plugin displays while the module runs (plugins/action/data_transfer.py, progress_line).
SIZE = r"[\d.]+ (?:B|KiB|MiB|GiB|TiB)"
PROGRESS_LINE = re.compile(
    rf"^\[(strata-lab-[12])\] data_transfer (\d+\.\d)%: {SIZE} of {SIZE}, {SIZE}/s, "
    r"ETA (?:\d+:\d\d:\d\d|-); streams (?:\d+ \w+)(?:, \d+ \w+)*$",
    re.MULTILINE,
)
COPY_TASK = "Copy the tree, a progress line every N seconds"
SHARES_TASK = "Set what the shares left to one host"
ASSERT_TASK = "Check the transfer's variables"

# -- helpers ---------------------------------------------------------------------------------------


class Run:
    """One ansible-playbook run: rc, stdout, stderr and (json callback) the document."""

    def __init__(self, proc, json_callback):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.doc = None
        if json_callback:
            self.doc = callback_document(self.stdout)
            assert self.doc is not None, f"no json document from ansible-playbook:\n{self}"

    def __str__(self):
        return f"rc {self.rc}\nstdout:\n{self.stdout[-6000:]}\nstderr:\n{self.stderr[-3000:]}"

    def tasks(self, name):
        """The results by host of every task whose name holds ``name``, in the order they ran."""
        return [
            task["hosts"]
            for play in self.doc["plays"]
            for task in play["tasks"]
            if name in task["task"]["name"]
        ]

    def task(self, name):
        found = self.tasks(name)
        assert len(found) == 1, f"{len(found)} tasks named {name!r} ran:\n{self}"
        return found[0]


def playbook(variables, json_callback=True, check=False, timeout=300):
    """ansible-playbook playbooks/transfer.yml -i inventories/lab -e key=value ... (the variables as a
    user gives them on the command line), confined to ROOT on the hosts."""
    argv = [ANSIBLE_PLAYBOOK, "-i", INVENTORY, PLAYBOOK, "-e", json.dumps(CONFINED)]
    for name, value in variables.items():
        argv += ["-e", f"{name}={value}"]
    if check:
        argv.append("--check")
    return Run(run_ansible(argv, json_callback, timeout), json_callback)


def one_to_one(src, dst, **more):
    """The variables of a copy from strata-lab-1:src to strata-lab-2:dst."""
    return {
        "data_transfer_source_host": SRC_HOST,
        "data_transfer_source_path": src,
        "data_transfer_dest_host": DST_HOST,
        "data_transfer_dest_path": dst,
        "data_transfer_streams": 4,
        "data_transfer_large_file_min": "8M",
        "data_transfer_chunk_size": "2M",
        **more,
    }


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    """ROOT fresh on the lab hosts with STATE, MANIFESTS and TMP (removed afterwards), the root keys
    authorized: prepare_lab."""
    yield from prepare_lab(ROOT, (STATE, MANIFESTS, TMP))


# -- the tests -------------------------------------------------------------------------------------

TREE = [
    *small_files("small/a", 15),
    *small_files("small/b", 15, seed=50),
    {"kind": "file", "path": "names/file with spaces.txt", "size": 321},
    {"kind": "file", "path": "empty.txt", "size": 0},
    {"kind": "dir", "path": "empty dir"},
    {"kind": "symlink", "path": "latest", "target": "small/a/f000.bin"},
    {"kind": "file", "path": "private/run.sh", "size": 70, "mode": 0o750},
    {"kind": "file", "path": "large/random.bin", "size": 30 * MIB + 12345, "seed": 7},
]


def test_one_source_host_copies_with_progress_lines_verifies_and_reruns_unchanged(where):
    src, dst = where
    make_tree(SRC_HOST, src, TREE)
    variables = one_to_one(
        src,
        dst,
        data_transfer_verify_after="true",
        data_transfer_progress_every=1,
        data_transfer_bwlimit="10M",
    )

    first = playbook(variables, json_callback=False)
    assert first.rc == 0, str(first)
    lines = PROGRESS_LINE.findall(first.stdout)
    assert lines, f"no progress line in the output:\n{first}"
    assert {host for host, _percent in lines} == {SRC_HOST}
    assert all(0.0 <= float(percent) <= 100.0 for _host, percent in lines)
    assert any(float(percent) < 100.0 for _host, percent in lines), f"no line while the copy ran: {lines}"
    # the verify play's summary, printed by the default callback (its YAML may wrap the message)
    flat = " ".join(first.stdout.split())
    assert f"{DST_HOST}:{dst} against {SRC_HOST}:{src} (" in flat, str(first)
    assert re.search(r"files from kept manifests\): identical(?: |$|')", flat), str(first)
    tree = assert_same_tree(SRC_HOST, src, DST_HOST, dst)
    # the role's summary: every file and byte of the tree sent
    files = sum(1 for entry in tree.values() if entry["type"] != "dir")
    assert f"{DST_HOST}:{dst}: {files} files, {tree_bytes(tree)} bytes sent at " in flat, str(first)

    second = playbook(variables)
    assert second.rc == 0, str(second)
    copied = second.task(COPY_TASK)[SRC_HOST]
    assert_ok(copied)
    assert copied["changed"] is False, copied["plan"]
    assert copied["plan"]["bytes"] == 0 and copied["plan"]["files"] == 0, copied["plan"]
    assert copied["destination"] == f"{DST_HOST}:{dst}"
    # the verify play ran again (on the controller) and found the copy identical
    verify_summary = [
        results["localhost"]["msg"] for results in second.tasks("Summary") if "localhost" in results
    ]
    assert len(verify_summary) == 1, str(second)
    assert verify_summary[0].endswith("): identical"), verify_summary[0]
    verify = second.task("Compare the copy with the source")["localhost"]["ansible_facts"][
        "data_transfer_verify"
    ]
    assert verify["identical"] is True, verify
    assert copied["source"] == src
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)


def test_check_mode_lists_extras_then_delete_extra_deletes_them(where):
    src, dst = where
    make_tree(SRC_HOST, src, [*small_files("small", 6), {"kind": "file", "path": "keep.txt", "size": 10}])
    first = playbook(one_to_one(src, dst))
    assert first.rc == 0, str(first)
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)
    sh(DST_HOST, f"cd {dst} && echo extra > extra.txt && echo stale > small/stale.bin")
    extras = ["extra.txt", "small/stale.bin"]

    deleting = one_to_one(src, dst, data_transfer_delete_extra="true")
    # not listed by a check-mode run yet: refused, nothing deleted
    refused = playbook(deleting)
    assert refused.rc != 0, str(refused)
    result = refused.task(COPY_TASK)[SRC_HOST]
    assert result.get("failed") is True and result.get("error") == "delete_not_listed", result
    assert exists(DST_HOST, f"{dst}/extra.txt") and exists(DST_HOST, f"{dst}/small/stale.bin")

    listed = playbook(deleting, check=True)
    assert listed.rc == 0, str(listed)
    result = listed.task(COPY_TASK)[SRC_HOST]
    assert_ok(result)
    assert result["extras"] == extras and result["deleted"] == [], result
    assert result["plan"]["bytes"] == 0, result["plan"]
    assert exists(DST_HOST, f"{dst}/extra.txt") and exists(DST_HOST, f"{dst}/small/stale.bin")
    summary = next(r[SRC_HOST]["msg"] for r in listed.tasks("Summary") if SRC_HOST in r)
    assert "would be sent" in summary and "extra files there: 2 (extra.txt, small/stale.bin)" in summary, (
        summary
    )

    deleted = playbook(deleting)
    assert deleted.rc == 0, str(deleted)
    result = deleted.task(COPY_TASK)[SRC_HOST]
    assert_ok(result)
    assert result["changed"] is True and result["deleted"] == extras, result
    assert not exists(DST_HOST, f"{dst}/extra.txt") and not exists(DST_HOST, f"{dst}/small/stale.bin")
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)


@pytest.mark.parametrize("bad", ["relative dest_path", "empty source_path"])
def test_bad_variables_fail_in_the_assert_task_and_create_nothing(where, bad):
    src, dst = where
    make_tree(SRC_HOST, src, small_files("small", 3))
    top = f"it-transfer-pb-{uuid.uuid4().hex[:8]}"
    relative = f"{top}/dst"
    variables = one_to_one(src, relative) if bad == "relative dest_path" else one_to_one("", dst)

    run = playbook(variables)
    assert run.rc != 0, str(run)
    result = run.task(ASSERT_TASK)[SRC_HOST]
    assert result.get("failed") is True, result
    assert result["msg"].startswith("Set data_transfer_source_path (the tree on the source hosts)"), result[
        "msg"
    ]
    if bad == "relative dest_path":
        assert result["assertion"] == "data_transfer_dest_path is match('/')", result
        assert f"dest {json.dumps(relative)}" in result["msg"], result["msg"]
    else:
        assert result["assertion"] == "data_transfer_source_path | length > 0", result
        assert 'got source ""' in result["msg"], result["msg"]
    assert run.tasks(COPY_TASK) == [], "the copy ran after the failed check"
    assert run.tasks("Hash the copy") == [], "the verify play ran after the failed check"
    for host in HOSTS:
        assert not exists(host, dst), f"{host}:{dst} was created"
        for folder in ("/root", "/", ROOT):
            assert not exists(host, f"{folder}/{top}"), f"{host}: {folder}/{relative} was created"


SHARED = shared_tree(20, 12 * MIB, 9 * MIB)


def test_two_source_hosts_share_one_tree_then_the_final_pass_sends_nothing(where):
    """The same tree at the same path on both hosts (as a shared mount shows it, same mtimes); each
    sends its share into strata-lab-1 (data_transfer_shared_source defaults to true)."""
    src, dst = where
    dst = dst.replace("/dst", "/shared-dst")
    source = make_shared_source(src, SHARED)

    run = playbook(
        {
            "data_transfer_source_hosts": f"{SRC_HOST},{DST_HOST}",
            "data_transfer_source_path": src,
            "data_transfer_dest_host": SRC_HOST,
            "data_transfer_dest_path": dst,
            "data_transfer_streams": 4,
            "data_transfer_large_file_min": "8M",
            "data_transfer_chunk_size": "2M",
            "data_transfer_verify_after": "true",
        }
    )
    assert run.rc == 0, str(run)
    shares = run.task(COPY_TASK)
    assert sorted(shares) == sorted(HOSTS), shares.keys()
    for host, result in shares.items():
        assert_ok(result)
        assert result["destination"] == f"{SRC_HOST}:{dst}", result
        assert result["plan"]["bytes"] > 0, (host, result["plan"])
        assert result["bytes_sent"] == result["plan"]["bytes"], (host, result)
    assert sum(result["plan"]["bytes"] for result in shares.values()) == tree_bytes(source), {
        host: result["plan"] for host, result in shares.items()
    }

    final = run.task(SHARES_TASK)
    ran = {host: result for host, result in final.items() if not result.get("skipped")}
    assert len(ran) == 1, final
    (result,) = ran.values()
    assert_ok(result)
    assert result["plan"]["bytes"] == 0 and result["plan"]["files"] == 0, result["plan"]
    assert_same_tree(SRC_HOST, src, SRC_HOST, dst)
    # and the verify play took the shared tree as one copy: identical
    verify = run.task("Compare the copy with the source")["localhost"]["ansible_facts"][
        "data_transfer_verify"
    ]
    assert verify["identical"] is True, verify
