"""What the data transfer tests between the lab hosts share (test_data_transfer.py, the module run
with ``ansible``; test_transfer_playbook.py, playbooks/transfer.yml run with ``ansible-playbook``).

Import the fixture into a test module with ``from .transfer_fixtures import *`` (pytest picks
fixtures up from the module namespace) and the helpers by name. Each test module keeps its own
directory on the hosts (its ROOT) and defines the module-scoped ``lab`` fixture over it:

    @pytest.fixture(scope="module")
    def lab():
        yield from prepare_lab(ROOT, (f"{ROOT}/state", ...))

    where   per test: (the source root, the destination) under the ``lab`` fixture's root

Helpers: sh(host, script) and py(host, code, *args) run on a lab host (docker exec); make_tree(host,
         root, spec) (MAKE_TREE), snapshot(host, root) (SNAPSHOT), make_local_tree(root, spec) and
         local_snapshot(root) (the same on this machine), assert_same_tree(...),
         assert_same_snapshot(source, copy),
         tree_bytes(snapshot), small_files(folder, count), shared_tree(...) and
         make_shared_source(src, spec) (the shared-source tests' tree on both hosts),
         exists(host, path), assert_ok(result);
         prepare_lab(root, dirs, clean) (the lab hosts running, root keys authorized, root fresh),
         authorize_key(dest, public_key);
         ansible_env(json_callback), run_ansible(argv, json_callback, timeout) and
         callback_document(stdout) (the ansible.posix.json callback's document), task_result(host,
         stdout, stderr) (the first task's result in it).
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from .conftest import REPO, skip_or_fail

__all__ = ["where"]

SRC_HOST, DST_HOST = "strata-lab-1", "strata-lab-2"
HOSTS = (SRC_HOST, DST_HOST)
KEY = "/root/.ssh/id_ed25519"
MIB = 1 << 20
INVENTORY = os.path.join(REPO, "inventories", "lab")
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

# Run on a lab host (argv: root, spec as JSON): a tree from a spec, the same bytes and times on every
# host (seeded random data; mtimes from the entry's index). Entries: {"kind": file|sparse|dir|symlink|
# hardlink|fifo, "path", "size", "seed", "data": [[offset, length]] (sparse), "target", "mode", "mtime"}.
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
dir_modes = {}
for index, item in enumerate(spec):
    path, kind = os.path.join(root, item["path"]), item["kind"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "dir":
        os.makedirs(path, exist_ok=True)
        if "mode" in item:
            dir_modes[path] = item["mode"]
        continue
    if kind == "file":
        with open(path, "wb") as handle:
            for chunk in chunks(item.get("seed", index), item["size"]):
                handle.write(chunk)
    elif kind == "sparse":
        with open(path, "wb") as handle:
            handle.truncate(item["size"])
            for offset, length in item["data"]:
                handle.seek(offset)
                handle.write(random.Random(offset).randbytes(length))
    elif kind == "symlink":
        os.symlink(item["target"], path)
    elif kind == "hardlink":
        os.link(os.path.join(root, item["target"]), path)
        continue
    elif kind == "fifo":
        os.mkfifo(path)
    if "mode" in item:
        os.chmod(path, item["mode"])
    mtime = item.get("mtime", BASE + index) * 10**9 + 123456789
    os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
for folder, _dirs, _files in sorted(os.walk(root), key=lambda walked: -len(walked[0])):
    if folder in dir_modes:
        os.chmod(folder, dir_modes[folder])
    mtime = (BASE - 86400 + len(folder)) * 10**9 + 987654321
    os.utime(folder, ns=(mtime, mtime))
"""

# Run on a lab host (argv: root): every entry under root as JSON, keyed by its path relative to root
# ("." the root): type, mode, uid, gid, mtime_ns; files: size, sha1, blocks, links (the paths in the
# tree sharing its inode), data (bytes in data extents, SEEK_DATA); symlinks: target.
SNAPSHOT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out, inodes = {}, {}

def data_bytes(path, size):
    total, position = 0, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            position = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            total += position - start
    finally:
        os.close(fd)
    return total

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
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            entry.update(sha1=digest.hexdigest(), data=data_bytes(path, info.st_size))
        except OSError as exc:
            entry.update(sha1="unreadable: " + exc.strerror, data=None)
        entry.update(type="file", size=info.st_size, blocks=info.st_blocks)
        inodes.setdefault((info.st_dev, info.st_ino), []).append(rel)
    elif stat.S_ISFIFO(info.st_mode):
        entry["type"] = "fifo"
    else:
        entry["type"] = "other"

visit("")
for paths in inodes.values():
    for rel in paths:
        out[rel]["links"] = sorted(paths)
print(json.dumps(out))
"""


# -- on the lab hosts ------------------------------------------------------------------------------


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


def make_local_tree(root, spec):
    """MAKE_TREE on this machine (a tree a container mounts)."""
    subprocess.run([sys.executable, "-c", MAKE_TREE, root, json.dumps(spec)], check=True, timeout=300)


def local_snapshot(root):
    proc = subprocess.run([sys.executable, "-c", SNAPSHOT, root], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def exists(host, path):
    return sh(host, f"test -e '{path}' && echo yes || echo no").strip() == "yes"


def small_files(folder, count, seed=0):
    return [
        {"kind": "file", "path": f"{folder}/f{index:03d}.bin", "size": 100 + index * 97, "seed": seed + index}
        for index in range(count)
    ]


def shared_tree(small, x_size, y_size):
    """The tree of the shared-source tests: ``small`` small files in each of small/a and small/b, an
    empty directory and file, a symlink, a hard-link pair, two large files (x_size, y_size bytes) and
    a 3 MiB one."""
    return [
        *small_files("small/a", small),
        *small_files("small/b", small, seed=50),
        {"kind": "dir", "path": "empty dir"},
        {"kind": "file", "path": "empty.txt", "size": 0},
        {"kind": "symlink", "path": "latest", "target": "small/a/f001.bin"},
        {"kind": "file", "path": "hard/a.bin", "size": 5000},
        {"kind": "hardlink", "path": "hard/b.bin", "target": "hard/a.bin"},
        {"kind": "file", "path": "large/x.bin", "size": x_size, "seed": 1},
        {"kind": "file", "path": "large/y.bin", "size": y_size, "seed": 2},
        {"kind": "file", "path": "medium/z.bin", "size": 3 * MIB, "seed": 3},
    ]


def make_shared_source(src, spec):
    """The same tree at ``src`` on both hosts, as a shared mount shows it (same bytes and times):
    its snapshot."""
    for host in HOSTS:
        make_tree(host, src, spec)
    source = snapshot(SRC_HOST, src)
    assert snapshot(DST_HOST, src) == source
    return source


def assert_same_tree(src_host, src, dst_host, dst, sparse=()):
    """The copy has exactly the source's entries with the same attributes (blocks and data extents
    aside); the files in ``sparse`` stay sparse in the copy. Returns the source's snapshot."""
    return assert_same_snapshot(snapshot(src_host, src), snapshot(dst_host, dst), sparse)


def assert_same_snapshot(source, copy, sparse=()):
    """assert_same_tree over two snapshots (SNAPSHOT), wherever they were taken."""
    assert sorted(set(copy) - set(source)) == [], "only in the copy"
    assert sorted(set(source) - set(copy)) == [], "missing in the copy"
    ignored = ("blocks", "data")
    differing = {
        path: {
            key: (entry.get(key), copy[path].get(key))
            for key in set(entry) | set(copy[path])
            if key not in ignored and entry.get(key) != copy[path].get(key)
        }
        for path, entry in source.items()
    }
    assert {path: diff for path, diff in differing.items() if diff} == {}, "(source, copy) differ"
    for path in sparse:
        blocks = copy[path]["blocks"] * 512
        assert blocks <= source[path]["blocks"] * 512 + MIB, (path, blocks, source[path]["blocks"] * 512)
        assert blocks < source[path]["size"] // 4, f"{path} is no longer sparse: {blocks} bytes of blocks"
    return source


def tree_bytes(tree):
    """What a copy of the whole tree sends: regular files' data (hard links once, a sparse file's
    data extents only)."""
    inodes = {}
    for entry in tree.values():
        if entry["type"] == "file":
            sparse = entry["blocks"] * 512 + 4096 < entry["size"]
            inodes[tuple(entry["links"])] = entry["data"] if sparse else entry["size"]
    return sum(inodes.values())


# -- ansible ---------------------------------------------------------------------------------------


def ansible_env(json_callback=True):
    """ansible's environment: the repository's ansible.cfg, no colors; the ansible.posix.json stdout
    callback, or the default one."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    if json_callback:
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    return env


def run_ansible(argv, json_callback=True, timeout=300):
    """``argv`` (ansible or ansible-playbook) run in the repository: the completed process."""
    return subprocess.run(
        argv,
        cwd=REPO,
        env=ansible_env(json_callback),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def callback_document(stdout):
    """The ansible.posix.json callback's document, which starts at the first line that is exactly
    "{" (the action plugin's progress lines come before it); None when there is none."""
    lines = stdout.splitlines(keepends=True)
    start = next((index for index, line in enumerate(lines) if line.rstrip("\r\n") == "{"), None)
    if start is None:
        return None
    try:
        return json.loads("".join(lines[start:]))
    except ValueError:
        return None


def task_result(host, stdout, stderr):
    """``host``'s result of the first task from the json callback's document (ansible's output)."""
    try:
        return callback_document(stdout)["plays"][0]["tasks"][0]["hosts"][host]
    except (TypeError, KeyError, IndexError):
        raise AssertionError(f"no result from ansible: {stdout[-3000:]}\n{stderr[-3000:]}") from None


def assert_ok(result):
    assert result.get("failed") is not True, result.get("msg")
    assert result.get("unreachable") is not True, result


# -- fixtures --------------------------------------------------------------------------------------


def authorize_key(dest, public_key):
    """``public_key`` may log in as root at the lab host ``dest`` (added once)."""
    sh(
        dest,
        "install -d -m 700 /root/.ssh && touch /root/.ssh/authorized_keys && key=$(cat) && "
        '{ grep -qxF "$key" /root/.ssh/authorized_keys || echo "$key" >> /root/.ssh/authorized_keys; } && '
        "chmod 600 /root/.ssh/authorized_keys",
        data=public_key.strip(),
    )


def authorize(source, dest):
    """``source``'s root key (made when missing) may log in as root at ``dest``; checked with ssh."""
    key = sh(
        source,
        f"test -f {KEY} || ssh-keygen -q -t ed25519 -N '' -C root@{source} -f {KEY} >/dev/null; "
        f"cat {KEY}.pub",
    ).strip()
    authorize_key(dest, key)
    login = sh(source, f"ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new {dest} hostname")
    assert login.strip() == dest


def prepare_lab(root, dirs, clean=None):
    """The body of a test module's ``lab`` fixture (``yield from``): the lab hosts running,
    strata-lab-1's key authorized on both hosts and strata-lab-2's on strata-lab-1; ``root`` fresh
    on both with ``dirs`` made (cleaned afterwards). ``clean(host)`` removes root (rm -rf by
    default). Yields root."""
    if clean is None:

        def clean(host):
            sh(host, f"rm -rf {root}")

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
        clean(host)
        sh(host, f"mkdir -p {' '.join(dirs)}")
    for source, dest in ((SRC_HOST, DST_HOST), (SRC_HOST, SRC_HOST), (DST_HOST, SRC_HOST)):
        authorize(source, dest)
    yield root
    for host in HOSTS:
        clean(host)


@pytest.fixture
def where(lab, request):
    """This test's directory on both hosts under the module's ``lab`` root (made there, removed
    afterwards): (the source root, the destination), neither made yet. The destination's parent
    exists, as it does in most copies."""
    base = f"{lab}/{request.node.name[len('test_') :][:24]}-{uuid.uuid4().hex[:6]}"
    for host in HOSTS:
        sh(host, f"mkdir -p {base}")
    yield f"{base}/src", f"{base}/dst"
    for host in HOSTS:
        sh(host, f"rm -rf {base}")
