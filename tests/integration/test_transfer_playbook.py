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
import subprocess
import sys
import uuid

import pytest

from .conftest import REPO, skip_or_fail

pytestmark = pytest.mark.needs("docker")

SRC_HOST, DST_HOST = "strata-lab-1", "strata-lab-2"
HOSTS = (SRC_HOST, DST_HOST)
ROOT = "/srv/it-transfer-pb"
STATE = f"{ROOT}/state"
MANIFESTS = f"{ROOT}/manifests"
TMP = f"{ROOT}/tmp"
PLAYBOOK = os.path.join(REPO, "playbooks", "transfer.yml")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
KEY = "/root/.ssh/id_ed25519"
MIB = 1 << 20
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

# Run on a lab host (argv: root, spec as JSON): a tree from a spec, the same bytes and times on every
# host (seeded random data; mtimes from the entry's index). Entries: {"kind": file|dir|symlink|hardlink,
# "path", "size", "seed", "target", "mode", "mtime"}.
MAKE_TREE = r"""
import json, os, random, sys
root, spec = sys.argv[1], json.loads(sys.argv[2])
BASE = 1700000000

def chunks(seed, size):
    rng = random.Random(seed)
    while size > 0:
        yield rng.randbytes(min(size, 8 << 20))
        size -= 8 << 20

os.makedirs(root, exist_ok=True)
for index, item in enumerate(spec):
    path, kind = os.path.join(root, item["path"]), item["kind"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "dir":
        os.makedirs(path, exist_ok=True)
        continue
    if kind == "file":
        with open(path, "wb") as handle:
            for chunk in chunks(item.get("seed", index), item["size"]):
                handle.write(chunk)
    elif kind == "symlink":
        os.symlink(item["target"], path)
    elif kind == "hardlink":
        os.link(os.path.join(root, item["target"]), path)
        continue
    if "mode" in item:
        os.chmod(path, item["mode"])
    mtime = item.get("mtime", BASE + index) * 10**9 + 123456789
    os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
for folder, _dirs, _files in sorted(os.walk(root), key=lambda walked: -len(walked[0])):
    mtime = (BASE - 86400 + len(folder)) * 10**9 + 987654321
    os.utime(folder, ns=(mtime, mtime))
"""

# Run on a lab host (argv: root): every entry under root as JSON, keyed by its path relative to root
# ("." the root): type, mode, uid, gid, mtime_ns; files: size, sha1, blocks, links (the paths in the
# tree sharing its inode); symlinks: target.
SNAPSHOT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out, inodes = {}, {}

def visit(rel):
    path = os.path.join(root, rel) if rel else root
    info = os.lstat(path)
    entry = {"mode": oct(stat.S_IMODE(info.st_mode)), "uid": info.st_uid, "gid": info.st_gid,
             "mtime_ns": info.st_mtime_ns}
    out[rel or "."] = entry
    if stat.S_ISDIR(info.st_mode):
        entry["type"] = "dir"
        for name in sorted(os.listdir(path)):
            visit(os.path.join(rel, name))
    elif stat.S_ISLNK(info.st_mode):
        entry.update(type="link", target=os.readlink(path))
    elif stat.S_ISREG(info.st_mode):
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        entry.update(type="file", size=info.st_size, blocks=info.st_blocks, sha1=digest.hexdigest())
        inodes.setdefault((info.st_dev, info.st_ino), []).append(rel)
    else:
        entry["type"] = "other"

visit("")
for paths in inodes.values():
    for rel in paths:
        out[rel]["links"] = sorted(paths)
print(json.dumps(out))
"""


# -- helpers ---------------------------------------------------------------------------------------


def sh(host, script, data=None, check=True, timeout=300):
    """bash -c ``script`` on a lab host (as root): its stdout."""
    proc = subprocess.run(
        ["docker", "exec", "-i", host, "bash", "-c", script],
        input=data,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{host}: {script[:300]} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def py(host, code, *args):
    proc = subprocess.run(
        ["docker", "exec", "-i", host, "python3", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{host}: python3 failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def make_tree(host, root, spec):
    py(host, MAKE_TREE, root, json.dumps(spec))


def snapshot(host, root):
    return json.loads(py(host, SNAPSHOT, root))


def exists(host, path):
    return sh(host, f"test -e '{path}' && echo yes || echo no").strip() == "yes"


def assert_same_tree(src_host, src, dst_host, dst):
    """The copy has exactly the source's entries with the same attributes (blocks aside). Returns the
    source's snapshot."""
    source, copy = snapshot(src_host, src), snapshot(dst_host, dst)
    assert sorted(set(copy) - set(source)) == [], "only in the copy"
    assert sorted(set(source) - set(copy)) == [], "missing in the copy"
    differing = {
        path: {
            key: (entry.get(key), copy[path].get(key))
            for key in set(entry) | set(copy[path])
            if key != "blocks" and entry.get(key) != copy[path].get(key)
        }
        for path, entry in source.items()
    }
    assert {path: diff for path, diff in differing.items() if diff} == {}, "(source, copy) differ"
    return source


def tree_bytes(tree):
    """What a copy of the whole tree sends: regular files' data, hard links once."""
    return sum({tuple(e["links"]): e["size"] for e in tree.values() if e["type"] == "file"}.values())


def small_files(folder, count, seed=0):
    return [
        {"kind": "file", "path": f"{folder}/f{index:03d}.bin", "size": 100 + index * 97, "seed": seed + index}
        for index in range(count)
    ]


class Run:
    """One ansible-playbook run: rc, stdout, stderr and (json callback) the document."""

    def __init__(self, proc, json_callback):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.doc = None
        if json_callback:
            lines = self.stdout.splitlines(keepends=True)
            start = next((i for i, line in enumerate(lines) if line.rstrip("\r\n") == "{"), None)
            try:
                self.doc = json.loads("".join(lines[start:])) if start is not None else None
            except ValueError:
                self.doc = None
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
    argv = [ANSIBLE_PLAYBOOK, "-i", "inventories/lab", PLAYBOOK, "-e", json.dumps(CONFINED)]
    for name, value in variables.items():
        argv += ["-e", f"{name}={value}"]
    if check:
        argv.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    if json_callback:
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(proc, json_callback)


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


def assert_ok(result):
    assert result.get("failed") is not True, result.get("msg")
    assert result.get("unreachable") is not True, result


# -- fixtures --------------------------------------------------------------------------------------


def _clean(host):
    sh(host, f"rm -rf {ROOT}")


def _authorize(source, dest):
    """``source``'s root key (made when missing) may log in as root at ``dest``; checked with ssh."""
    key = sh(
        source,
        f"test -f {KEY} || ssh-keygen -q -t ed25519 -N '' -C root@{source} -f {KEY} >/dev/null; "
        f"cat {KEY}.pub",
    ).strip()
    sh(
        dest,
        "install -d -m 700 /root/.ssh && touch /root/.ssh/authorized_keys && key=$(cat) && "
        '{ grep -qxF "$key" /root/.ssh/authorized_keys || echo "$key" >> /root/.ssh/authorized_keys; } && '
        "chmod 600 /root/.ssh/authorized_keys",
        data=key,
    )
    login = sh(source, f"ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new {dest} hostname")
    assert login.strip() == dest


@pytest.fixture(scope="module")
def lab():
    """The lab hosts running, strata-lab-1's key authorized on both hosts and strata-lab-2's on
    strata-lab-1; ROOT fresh on both (removed afterwards)."""
    for host in HOSTS:
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", host],
            capture_output=True,
            text=True,
            check=False,
        )
        if state.stdout.strip() != "true":
            skip_or_fail(f"the lab host {host} is not running (tests/testbed/up)")
    for host in HOSTS:
        _clean(host)
        sh(host, f"mkdir -p {STATE} {MANIFESTS} {TMP}")
    for source, dest in ((SRC_HOST, DST_HOST), (SRC_HOST, SRC_HOST), (DST_HOST, SRC_HOST)):
        _authorize(source, dest)
    yield
    for host in HOSTS:
        _clean(host)


@pytest.fixture
def where(lab, request):
    """This test's directory on both hosts (made there, removed afterwards): (the source root, the
    destination), neither made yet."""
    base = f"{ROOT}/{request.node.name[len('test_') :][:24]}-{uuid.uuid4().hex[:6]}"
    for host in HOSTS:
        sh(host, f"mkdir -p {base}")
    yield f"{base}/src", f"{base}/dst"
    for host in HOSTS:
        sh(host, f"rm -rf {base}")


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


SHARED = [
    *small_files("small/a", 20),
    *small_files("small/b", 20, seed=50),
    {"kind": "dir", "path": "empty dir"},
    {"kind": "file", "path": "empty.txt", "size": 0},
    {"kind": "symlink", "path": "latest", "target": "small/a/f001.bin"},
    {"kind": "file", "path": "hard/a.bin", "size": 5000},
    {"kind": "hardlink", "path": "hard/b.bin", "target": "hard/a.bin"},
    {"kind": "file", "path": "large/x.bin", "size": 12 * MIB, "seed": 1},
    {"kind": "file", "path": "large/y.bin", "size": 9 * MIB, "seed": 2},
    {"kind": "file", "path": "medium/z.bin", "size": 3 * MIB, "seed": 3},
]


def test_two_source_hosts_share_one_tree_then_the_final_pass_sends_nothing(where):
    """The same tree at the same path on both hosts (as a shared mount shows it, same mtimes); each
    sends its share into strata-lab-1 (data_transfer_shared_source defaults to true)."""
    src, dst = where
    dst = dst.replace("/dst", "/shared-dst")
    for host in HOSTS:
        make_tree(host, src, SHARED)
    source = snapshot(SRC_HOST, src)
    assert snapshot(DST_HOST, src) == source

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
