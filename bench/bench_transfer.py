#!/usr/bin/env python3
"""Copying a tree between two hosts: strata.ops.data_transfer (N ssh streams, resumable) against one
``rsync -aH`` over ssh, on a link capped the way a long link caps one TCP connection.

The lab hosts strata-lab-1 (source) and strata-lab-2 (destination), with ``tests/testbed/netcap
strata-lab-2 8 80``: every TCP connection into strata-lab-2 at most 8 MB/s (as one ssh channel's
window per round trip caps it on a long link), all together at most 80 MB/s (the link). The source
tree (made once on strata-lab-1, kept for the next run): about 2,000 files of 4-64 KiB in
subdirectories, six of 1-16 MiB, three of 128 MiB, a 256 MiB sparse file with a little data, empty
files and an empty directory, names with spaces and non-ASCII letters, a symlink and a hard link.
Each copy goes into a fresh directory on strata-lab-2:

  (a) strata.ops.data_transfer with 16 streams (an Ansible ad-hoc task on strata-lab-1; files of
      64 MiB or more cut into 16 MiB ranges, so the 128 MiB files use many streams - with the
      module's defaults, 256M and 64M, each would go whole over one connection): the bytes it sent
      (data; the sparse file's holes are not sent) per second of the streams' time (the module's
      elapsed_s) as a share of the link (goal >= 0.9x), printed beside it the task's wall time
      (Ansible, the probe, the attributes at the end);
  (b) one ``rsync -aH`` over ssh, run on strata-lab-1 (the baseline: one connection, ~0.1x link;
      its rate over its first 30 s by default);
  (c) resume: data_transfer is killed (kill -9 of the module; its children die with it) once its
      progress file says half is sent; the bytes still missing at the destination are counted
      (files at their final path with the source's size, the bytes the range markers in
      .strata-transfer/ record, rsync's partial files in .strata-partial/; the sparse file's holes
      past its partial copy are left out: rsync's delta rebuilds them from the zero blocks of that
      copy instead of sending them), then the same task is run again to the end. Its payload (the
      module's bytes_sent) and its wire bytes (rx_bytes of strata-lab-2's eth0: TCP and ssh
      overhead included) against the missing bytes; goal <= 1.05x, judged on the wire bytes. A
      rerun that fails is reported as such (the bench then exits 1);
  (d) with the caps cleared and the page cache dropped before each (root writes
      /proc/sys/vm/drop_caches; the containers share this kernel): playbooks/transfer_verify.yml
      (xxh128 manifests made on each host, compared on the controller) on the source and (a)'s
      copy, against ``rsync -aH -c --dry-run`` over ssh between the same trees (rsync 3.2 checks
      with xxh128; judged on it) and, beside it, the same with --checksum-choice=md5 (what rsync
      3.0-3.1 used); goal >= 10x (on a long link with big disks; here both hosts share one
      machine's disk and two CPUs);
  (e) the verify again with the manifests kept (nothing changed, nothing re-read);
  then, untimed, the verify of (c)'s resumed copy, which must be identical too.

The caps are cleared at the end, also on errors and Ctrl-C; the copies are removed, the source tree
is kept (its recipe in /srv/bench-transfer/src.recipe.json). Env: BENCH_TRANSFER_SCALE (default 1:
sizes and the number of small files scale with it; 0.1 for a quick run), BENCH_TRANSFER_STREAMS
(default 16), BENCH_TRANSFER_SMALL (default 0.1: (a) again on a tree of that share, kept in
/srv/bench-transfer/src-small, for the growth lines; 0: none), BENCH_TRANSFER_RSYNC_S (default
30: (b) is rsync's rate over its first 30 s, killed then; 0: the whole tree). Needs root (tc,
drop_caches) and the lab hosts (started with ``tests/testbed/up all`` when not running). Prints
one final line `bench transfer: ...`; exits non-zero only on errors.
"""

import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from benchkit import growth_lines
from caches import drop_caches
from results import record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
INVENTORY = os.path.join(REPO, "inventories", "lab")
NETCAP = os.path.join(REPO, "tests", "testbed", "netcap")
SOURCE_HOST, DEST_HOST = "strata-lab-1", "strata-lab-2"
ROOT = "/srv/bench-transfer"
SOURCE = f"{ROOT}/src"
STAMP = f"{ROOT}/src.recipe.json"
# The growth line's second size: the same recipe at a tenth (BENCH_TRANSFER_SMALL; 0: none).
SMALL_SOURCE, SMALL_STAMP = f"{ROOT}/src-small", f"{ROOT}/src-small.recipe.json"
SMALL_DEST = f"{ROOT}/dst-s"
STATE = "/var/lib/strata-bench"
MANIFESTS = f"{STATE}/manifests"
PROGRESS_C = f"{STATE}/progress-c.json"
FLOW_MB, LINK_MB = 8, 80
LINK = LINK_MB * 1e6  # tc's mbps: 10^6 bytes/s
GOAL_LINK, GOAL_RESUME, GOAL_VERIFY = 0.9, 1.05, 10.0
SSH_OPTIONS = ["StrictHostKeyChecking=accept-new"]
RSYNC_SSH = "ssh -o StrictHostKeyChecking=accept-new -o BatchMode=yes"
# The rsync baseline's sample: 0 runs it over the whole tree (the default run's ~100 s saved).
RSYNC_SAMPLE_S = int(os.environ.get("BENCH_TRANSFER_RSYNC_S", "30"))
# rsync --info=progress2: "  228,000,000  45%  7.60MB/s ..." (bytes moved so far, then percent).
RSYNC_PROGRESS2 = re.compile(r"([\d,]+)\s+\d+%")
MIB = 1 << 20

# Run on strata-lab-1 (argv: recipe JSON, root, stamp): the source tree, unless the stamp says it
# is already there with this recipe.
MAKE_TREE = r"""
import json, os, random, shutil, sys
text, root, stamp = sys.argv[1:4]
recipe = json.loads(text)
try:
    with open(stamp) as handle:
        if handle.read() == text and os.path.isdir(root):
            print("reused")
            sys.exit(0)
except OSError:
    pass
if os.path.exists(stamp):
    os.unlink(stamp)
shutil.rmtree(root, ignore_errors=True)
rng = random.Random(17)

def write(rel, size):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        while size > 0:
            handle.write(os.urandom(min(size, 8 << 20)))
            size -= 8 << 20

for index in range(recipe["small_files"]):
    folder = "small/d%02d/s%d" % (index // 200, index // 40 % 5)
    if index % 97 == 5:
        name = "file %d with spaces.bin" % index
    elif index % 89 == 7:
        name = "donn\u00e9es-%d-\u00c4\u00d6\u00fc-\u00df-" % index
        name += "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac.dat"
    else:
        name = "f%05d.bin" % index
    write(os.path.join(folder, name), rng.randint(recipe["small_min"], recipe["small_max"]))
for index, size in enumerate(recipe["medium"]):
    write("medium/m%d.bin" % index, size)
for index, size in enumerate(recipe["large"]):
    write("large/big file %d.bin" % index, size)
sparse = os.path.join(root, "sparse", "sparse \u00e9t\u00e9.img")
os.makedirs(os.path.dirname(sparse))
with open(sparse, "wb") as handle:
    handle.truncate(recipe["sparse"])
    for offset in (MIB, recipe["sparse"] // 2):
        handle.seek(offset)
        handle.write(os.urandom(recipe["sparse_data"] // 2))
os.makedirs(os.path.join(root, "empty", "empty dir"))
for index in range(recipe["empty"]):
    open(os.path.join(root, "empty", "e%d" % index), "wb").close()
write("links/hard-a.bin", 256 << 10)
os.link(os.path.join(root, "links/hard-a.bin"), os.path.join(root, "links/hard-b.bin"))
os.symlink("../medium/m0.bin", os.path.join(root, "links/to-m0"))
os.sync()
with open(stamp, "w") as handle:
    handle.write(text)
print("made")
""".replace("MIB", str(MIB))

# Run on strata-lab-1 (argv: root, large_min): the regular files as JSON, with the name of a large
# file's ranges at the destination (tree_copy.plan.range_key: sha1 of path, size, mtime_ns) and a
# sparse file's data extents (SEEK_DATA / SEEK_HOLE).
LIST_TREE = r"""
import hashlib, json, os, stat, sys
root, large_min = sys.argv[1], int(sys.argv[2])
files = []

def extents(path, size):
    found, position = [], 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after position
                break
            position = os.lseek(fd, start, os.SEEK_HOLE)
            found.append([start, position])
    finally:
        os.close(fd)
    return found

for folder, dirs, names in os.walk(root):
    for name in names:
        path = os.path.join(folder, name)
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            continue
        rel = os.path.relpath(path, root)
        text = "%s\0%d\0%d" % (rel, info.st_size, info.st_mtime_ns)
        key = hashlib.sha1(text.encode("utf-8", "surrogateescape"))
        sparse = info.st_blocks * 512 < info.st_size
        files.append({"path": rel, "size": info.st_size, "inode": "%d:%d" % (info.st_dev, info.st_ino),
                      "key": key.hexdigest()[:20] if info.st_size >= large_min else None,
                      "extents": extents(path, info.st_size) if sparse else None})
print(json.dumps(files))
"""

# Run on strata-lab-2 (argv: the copy; stdin: LIST_TREE's output): what is already there, as JSON.
# Hard-linked files count once; a file counts whole when it is at its final path with the source's
# size (rsync and the range finisher rename into place only complete files). "zeros": holes that
# are never sent - of a sparse file sent in ranges (only its data extents are), or past the partial
# copy of one sent by rsync -S (its delta rebuilds them from that copy's zero blocks); "missing_data"
# leaves them out.
MISSING = r"""
import json, os, stat, sys
dest = sys.argv[1]
files = json.load(sys.stdin)
groups = {}
for item in files:
    groups.setdefault(item["inode"], []).append(item)
markers = {}
work = os.path.join(dest, ".strata-transfer")
if os.path.isdir(work):
    for name in os.listdir(work):
        key, _, offset = name.partition(".")
        if offset.isdigit():
            with open(os.path.join(work, name)) as handle:
                markers[key] = markers.get(key, 0) + int(handle.read() or 0)

def size_at(path):
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None

found = {"total": 0, "complete": 0, "ranges": 0, "partial": 0, "files": 0, "complete_files": 0, "zeros": 0}
for members in groups.values():
    size = members[0]["size"]
    found["total"] += size
    found["files"] += 1
    if any(size_at(os.path.join(dest, m["path"])) == size for m in members):
        found["complete"] += size
        found["complete_files"] += 1
        continue
    for member in members:
        if member["key"]:
            # Range markers count data bytes; a sparse file's holes are never sent (the receiver
            # leaves them holes), so they are not missing.
            found["ranges"] += min(size, markers.get(member["key"], 0))
            if member["extents"] is not None:
                found["zeros"] += size - sum(end - start for start, end in member["extents"])
            continue
        folder, name = os.path.split(member["path"])
        partial = size_at(os.path.join(dest, folder, ".strata-partial", name))
        if partial:
            found["partial"] += min(size, partial)
            if member["extents"] is not None:
                data = sum(max(0, end - max(start, partial)) for start, end in member["extents"])
                found["zeros"] += size - min(size, partial) - data
            break
found["missing"] = found["total"] - found["complete"] - found["ranges"] - found["partial"]
found["missing_data"] = found["missing"] - found["zeros"]
print(json.dumps(found))
"""

# Run on a lab host (argv: a path; "kill" to kill -9 the python3 process that runs the module, the
# nearest python ancestor of the rsync and ssh processes whose command line names the path; "all"
# to kill -9 those processes too): prints the pids of the processes whose command line names it,
# then those killed.
PROCESSES = r"""
import os, signal, sys
pattern, action = sys.argv[1].encode(), sys.argv[2]
me = os.getpid()

def read(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as handle:
            return handle.read()
    except OSError:
        return b""

def parent(pid):
    fields = read(pid, "stat").rpartition(b")")[2].split()
    return int(fields[1]) if len(fields) > 1 else 0

pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
matching = [pid for pid in pids if pattern in read(pid, "cmdline")]
killed = set(matching) if action == "all" else set()
if action in ("kill", "all"):
    for pid in matching:
        up = parent(pid)
        while up > 1 and not read(up, "comm").startswith(b"python"):
            up = parent(up)
        if up > 1:
            killed.add(up)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
print(" ".join(map(str, matching)))
print(" ".join(map(str, sorted(killed))))
"""


class BenchError(Exception):
    pass


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(argv, data=None, check=True, timeout=None):
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise BenchError(
            f"{shlex.join(argv)[:200]} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}"
        )
    return proc


def host_sh(host, script, data=None, check=True):
    return run(["docker", "exec", "-i", host, "bash", "-c", script], data, check).stdout


def host_python(host, code, *args, data=None):
    return run(["docker", "exec", "-i", host, "python3", "-c", code, *args], data).stdout


def netcap(*args):
    run([NETCAP, DEST_HOST, *map(str, args)])


def recipe(share=1.0):
    scale = float(os.environ.get("BENCH_TRANSFER_SCALE", "1")) * share
    if scale <= 0:
        raise BenchError(f"BENCH_TRANSFER_SCALE must be above 0, got {scale}")
    large = max(4 * MIB, round(128 * MIB * scale / MIB) * MIB)
    return {
        "version": 1,
        "small_files": max(40, round(2000 * scale)),
        "small_min": 4 << 10,
        "small_max": 64 << 10,
        "medium": [max(64 << 10, round(mib * MIB * scale)) for mib in (1, 3, 6, 9, 12, 16)],
        "large": [large] * 3,
        "sparse": max(4 * MIB, round(256 * MIB * scale / MIB) * MIB),
        "sparse_data": 128 << 10,
        "empty": 5,
        # data_transfer's range settings for this tree: a large file in 8 ranges.
        "large_file_min": large // 2,
        "chunk_size": max(MIB, large // 8 // MIB * MIB),
    }


def setup(tree):
    """The lab hosts, the ssh key of strata-lab-1 authorized on strata-lab-2, the source tree."""
    states = [
        run(["docker", "inspect", "-f", "{{.State.Running}}", h], check=False).stdout.strip()
        for h in (SOURCE_HOST, DEST_HOST)
    ]
    if states != ["true", "true"]:
        print("setup: the lab hosts are not running: tests/testbed/up all", flush=True)
        proc = subprocess.run([os.path.join(REPO, "tests", "testbed", "up"), "all"], check=False)
        if proc.returncode != 0:
            raise BenchError(f"tests/testbed/up all failed (exit {proc.returncode})")
    key = host_sh(
        SOURCE_HOST,
        "test -f /root/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' "
        "-f /root/.ssh/id_ed25519 >/dev/null; cat /root/.ssh/id_ed25519.pub",
    )
    host_sh(
        DEST_HOST,
        "install -d -m 700 /root/.ssh && touch /root/.ssh/authorized_keys && "
        'key=$(cat) && { grep -qxF "$key" /root/.ssh/authorized_keys || echo "$key" >> '
        "/root/.ssh/authorized_keys; } && chmod 600 /root/.ssh/authorized_keys",
        data=key.strip(),
    )
    host_sh(SOURCE_HOST, f"{RSYNC_SSH} {DEST_HOST} true")
    host_sh(
        DEST_HOST, f"rm -rf {ROOT}/dst-a {ROOT}/dst-b {ROOT}/dst-c {SMALL_DEST} {STATE} && mkdir -p {ROOT}"
    )
    host_sh(SOURCE_HOST, f"rm -rf {STATE} && mkdir -p {ROOT} {STATE}")
    return source_tree(tree, SOURCE, STAMP)


def source_tree(tree, source, stamp):
    """The tree of ``tree`` (a recipe) at ``source`` on the source host, made or kept: (files, bytes)."""
    start = time.monotonic()
    made = host_python(SOURCE_HOST, MAKE_TREE, json.dumps(tree, sort_keys=True), source, stamp).strip()
    files = json.loads(host_python(SOURCE_HOST, LIST_TREE, source, str(tree["large_file_min"])))
    total = sum({f["inode"]: f["size"] for f in files}.values())
    print(
        f"setup: source tree {source} on {SOURCE_HOST} {made} in {time.monotonic() - start:.1f} s: "
        f"{len(files)} files, {total / 1e6:.0f} MB (apparent sizes, hard links once)",
        flush=True,
    )
    return files, total


def transfer_argv(tree, dest, progress=None, source=SOURCE):
    args = {
        "src_path": source,
        "dest_host": DEST_HOST,
        "dest_path": dest,
        "streams": int(os.environ.get("BENCH_TRANSFER_STREAMS", "16")),
        "ssh_options": SSH_OPTIONS,
        "large_file_min": str(tree["large_file_min"]),
        "chunk_size": str(tree["chunk_size"]),
    }
    if progress:
        args["progress_file"] = progress
    return [
        os.path.join(BIN, "ansible"),
        SOURCE_HOST,
        "-i",
        INVENTORY,
        "-m",
        "strata.ops.data_transfer",
        "-a",
        json.dumps(args),
    ]


def ansible_env():
    return dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )


def callback_json(text):
    """The ansible.posix.json callback's document: the lines before it (data_transfer's action plugin
    displays progress lines on stdout while the module runs) are skipped."""
    start = 0 if text.startswith("{") else text.find("\n{\n") + 1
    return json.loads(text[start:])


def transfer(tree, dest, progress=None, source=SOURCE):
    """(seconds, the task's result) of data_transfer into dest; fails on a failed task."""
    start = time.monotonic()
    proc = subprocess.run(
        transfer_argv(tree, dest, progress, source),
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - start
    try:
        result = callback_json(proc.stdout)["plays"][0]["tasks"][0]["hosts"][SOURCE_HOST]
    except (ValueError, KeyError, IndexError):
        raise BenchError(
            f"data_transfer gave no result: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
        ) from None
    if result.get("failed") or result.get("unreachable") or proc.returncode != 0:
        raise BenchError(f"data_transfer into {dest} failed (rc {proc.returncode}): {result.get('msg')}")
    return seconds, result


def fresh(dest):
    host_sh(DEST_HOST, f"rm -rf {shlex.quote(dest)}")


def measure_ours(tree, total, source=SOURCE, dest=f"{ROOT}/dst-a"):
    fresh(dest)
    seconds, result = transfer(tree, dest, source=source)
    # The link share is judged on the bytes that crossed it (bytes_sent: data, each hard-linked file
    # once, the sparse file's holes not at all); the tree's apparent bytes per second beside it.
    rate = result["bytes_sent"] / result["elapsed_s"]
    biggest = max(s["bytes_total"] for s in result["streams"])
    retries = sum(s["retries"] for s in result["streams"])
    print(
        f"(a) data_transfer {result['plan']['streams']} streams, {result['plan']['large_files']} large files "
        f"in ranges: {result['bytes_sent'] / 1e6:.0f} MB sent of a {total / 1e6:.0f} MB tree, streams "
        f"{result['elapsed_s']:.1f} s = {rate / 1e6:.1f} MB/s ({rate / LINK:.2f}x link; the tree "
        f"{total / result['elapsed_s'] / 1e6:.1f} MB/s); task wall {seconds:.1f} s = "
        f"{result['bytes_sent'] / seconds / 1e6:.1f} MB/s ({result['bytes_sent'] / seconds / LINK:.2f}x); "
        f"its largest stream {biggest / 1e6:.0f} MB = "
        f"{biggest / (FLOW_MB * 1e6):.1f} s at {FLOW_MB} MB/s per connection; "
        f"{retries} stream retries; bytes_sent {result['bytes_sent']}, the tree {total}",
        flush=True,
    )
    return {
        "rate": rate,
        "wall_rate": total / seconds,
        "wall_sent_rate": result["bytes_sent"] / seconds,
        "seconds": seconds,
        "retries": retries,
        "elapsed_s": result["elapsed_s"],
        "sent": result["bytes_sent"],
    }


def measure_growth(ours):
    """data_transfer again on a tree a tenth the size (kept beside the main one), for the growth
    lines of the streams' time and the task's wall against the bytes sent."""
    share = float(os.environ.get("BENCH_TRANSFER_SMALL", "0.1"))
    if share <= 0:
        return
    tree = recipe(share)
    _files, total = source_tree(tree, SMALL_SOURCE, SMALL_STAMP)
    print("(a) again on that tree, for the growth lines:", flush=True)
    small = measure_ours(tree, total, SMALL_SOURCE, SMALL_DEST)
    fresh(SMALL_DEST)
    for label, key in (
        ("data_transfer streams (MB sent)", "elapsed_s"),
        ("data_transfer task (MB sent)", "seconds"),
    ):
        points = [(round(run["sent"] / 1e6), run[key]) for run in (small, ours)]
        for line in growth_lines(label, points):
            print(line, flush=True)


def measure_rsync(total):
    """One rsync -aH's rate: the whole tree, or its first RSYNC_SAMPLE_S seconds (BENCH_TRANSFER_RSYNC_S).

    One rsync is one TCP connection, held at the per-connection cap from its first second, so a
    sample gives its rate without the ~100 s the whole tree takes (7.6 MB/s over the whole tree,
    6.8 MB/s over 10 s: the start, ssh and the file list, weighs more in a short sample). The
    sample covers the first files in rsync's sorted order, the large ones. progress2's first
    figure is the bytes moved.
    """
    dest = f"{ROOT}/dst-b"
    fresh(dest)
    argv = f"rsync -aH --info=progress2 -e {shlex.quote(RSYNC_SSH)} {SOURCE}/ {DEST_HOST}:{dest}/"
    if RSYNC_SAMPLE_S:
        argv = f"timeout -s INT {RSYNC_SAMPLE_S} {argv}; true"
    start = time.monotonic()
    output = host_sh(SOURCE_HOST, argv)
    seconds = time.monotonic() - start
    moved = [int(m.group(1).replace(",", "")) for m in RSYNC_PROGRESS2.finditer(output)]
    sampled = RSYNC_SAMPLE_S and seconds < RSYNC_SAMPLE_S + 5 and moved and moved[-1] < total
    rate = moved[-1] / seconds if sampled else total / seconds
    what = f"its first {seconds:.1f} s, {moved[-1] / 1e6:.0f} MB moved" if sampled else f"{seconds:.1f} s"
    print(
        f"(b) one rsync -aH over ssh: {what} = {rate / 1e6:.1f} MB/s ({rate / LINK:.2f}x link)",
        flush=True,
    )
    fresh(dest)
    return {"rate": rate, "seconds": total / rate}


def processes(host, pattern, action="list"):
    matching, killed = (host_python(host, PROCESSES, pattern, action) + "\n\n").split("\n")[:2]
    return matching.split(), killed.split()


def read_progress():
    text = host_sh(SOURCE_HOST, f"cat {PROGRESS_C} 2>/dev/null", check=False)
    try:
        return json.loads(text)
    except ValueError:
        return None


def payload_dirs():
    """The AnsiballZ payload directories of data_transfer on the source host (kill -9 leaves one)."""
    listing = host_sh(
        SOURCE_HOST, "ls -d /tmp/ansible_strata.ops.data_transfer_payload_* 2>/dev/null", check=False
    )
    return set(listing.split())


def interrupt(tree, dest, log):
    """Starts data_transfer into dest and kills it once half is sent: the progress it had."""
    host_sh(SOURCE_HOST, f"rm -f {PROGRESS_C}")
    before = payload_dirs()
    proc = subprocess.Popen(
        transfer_argv(tree, dest, PROGRESS_C),
        cwd=REPO,
        env=ansible_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 900
        while True:
            progress = read_progress()
            if progress and progress["bytes_total"] and progress["bytes_done"] >= progress["bytes_total"] / 2:
                break
            if proc.poll() is not None:
                raise BenchError("(c) data_transfer ended before half was sent: raise BENCH_TRANSFER_SCALE")
            if time.monotonic() > deadline:
                raise BenchError("(c) data_transfer sent less than half within 900 s")
            time.sleep(0.2)
        _matching, killed = processes(SOURCE_HOST, dest, "kill")
        if not killed:
            raise BenchError(f"(c) found no module process to kill on {SOURCE_HOST}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for host in (SOURCE_HOST, DEST_HOST):  # rsync, ssh and the range receivers end with the module
        deadline = time.monotonic() + 60
        while processes(host, dest)[0]:
            if time.monotonic() > deadline:
                raise BenchError(f"(c) processes of the killed transfer still run on {host}")
            time.sleep(0.3)
    left = sorted(payload_dirs() - before)
    if left:
        host_sh(SOURCE_HOST, "rm -rf " + " ".join(map(shlex.quote, left)))
    return progress


def rx_bytes():
    return int(host_sh(DEST_HOST, "cat /sys/class/net/eth0/statistics/rx_bytes"))


def measure_resume(tree, files):
    dest = f"{ROOT}/dst-c"
    fresh(dest)
    with tempfile.TemporaryFile(mode="w+") as log:
        progress = interrupt(tree, dest, log)
    found = json.loads(host_python(DEST_HOST, MISSING, dest, data=json.dumps(files)))
    print(
        f"(c) killed at {progress['bytes_done'] / 1e6:.0f} of {progress['bytes_total'] / 1e6:.0f} MB "
        f"(progress file); at {dest}: {found['complete_files']} of {found['files']} files complete "
        f"({found['complete'] / 1e6:.0f} MB), range markers {found['ranges'] / 1e6:.1f} MB, rsync partial "
        f"files {found['partial'] / 1e6:.1f} MB: {found['missing'] / 1e6:.1f} MB missing, of which "
        f"{found['zeros'] / 1e6:.1f} MB holes of the sparse file, never sent: "
        f"{found['missing_data'] / 1e6:.1f} MB to send",
        flush=True,
    )
    if found["missing_data"] <= 0:
        raise BenchError("(c) nothing is missing after the kill: the transfer was not interrupted")
    before = rx_bytes()
    try:
        seconds, result = transfer(tree, dest, PROGRESS_C)
    except BenchError as exc:  # the resume itself failed: reported, and the bench goes on to (d)
        print(f"(c) rerun FAILED: {exc}", flush=True)
        return {"error": str(exc), "dest": dest}
    wire = rx_bytes() - before
    payload = result.get("bytes_sent", 0)
    retries = sum(s["retries"] for s in result.get("streams", []))
    missing = found["missing_data"]
    print(
        f"(c) rerun: {seconds:.1f} s, planned {result['plan']['bytes'] / 1e6:.1f} MB; "
        f"{wire / 1e6:.1f} MB on the wire (rx of {DEST_HOST}) = {wire / missing:.3f}x the bytes to send "
        f"({wire / found['missing']:.3f}x all missing bytes); bytes_sent {payload / 1e6:.1f} MB = "
        f"{payload / missing:.3f}x (it counts whole every file rsync sends, its partial copy too); "
        f"{retries} stream retries",
        flush=True,
    )
    return {
        "payload": payload / missing,
        "wire": wire / missing,
        "wire_bytes": wire,
        "missing_bytes": missing,
        "dest": dest,
    }


def verify(dest):
    """(seconds, summary) of playbooks/transfer_verify.yml on the source and dest."""
    argv = [
        os.path.join(BIN, "ansible-playbook"),
        "-i",
        INVENTORY,
        os.path.join(REPO, "playbooks", "transfer_verify.yml"),
    ]
    for name, value in (
        ("source_host", SOURCE_HOST),
        ("source_path", SOURCE),
        ("dest_host", DEST_HOST),
        ("dest_path", dest),
        ("hash", "xxh128"),
        ("manifest_dir", MANIFESTS),
    ):
        argv += ["-e", f"data_transfer_{name}={value}"]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    summary, hashing = None, []
    try:
        for task in callback_json(proc.stdout)["plays"][0]["tasks"]:
            name = task["task"]["name"]
            if name.endswith("Summary"):
                summary = task["hosts"]["localhost"]["msg"]
            elif name.startswith(("Hash the", "Wait for the source")):
                hashing.append(task_seconds(task["task"]["duration"]))
    except (ValueError, KeyError, IndexError):
        pass
    if proc.returncode != 0 or not summary or not summary.rstrip().endswith(": identical"):
        found = " ".join(summary.rpartition("): ")[2].split()) if summary else proc.stdout[-2000:]
        raise BenchError(f"verify of {dest} failed (rc {proc.returncode}): {found}")
    if hashing:
        summary += f" [hashing, both hosts at once: {sum(hashing):.1f} s of tasks]"
    return seconds, " ".join(summary.split())


def task_seconds(duration):
    """A task's seconds from the json callback's ISO start and end times."""
    start, end = (
        datetime.datetime.fromisoformat(duration[k].replace("Z", "+00:00")) for k in ("start", "end")
    )
    return (end - start).total_seconds()


def rsync_check(dest, choice=""):
    """rsync -c's own check; ``choice`` its --checksum-choice (rsync 3.2 negotiates xxh128 by default;
    md5 is what rsync 3.0-3.1, the operators' version, used)."""
    option = f" --checksum-choice={choice}" if choice else ""
    start = time.monotonic()
    out = host_sh(
        SOURCE_HOST,
        f"rsync -aH -c{option} --dry-run --itemize-changes -e {shlex.quote(RSYNC_SSH)} "
        f"{SOURCE}/ {DEST_HOST}:{dest}/",
    )
    seconds = time.monotonic() - start
    items = [line for line in out.splitlines() if line.strip()]
    files = [line for line in items if line[1:2] != "d"]
    if files:
        raise BenchError(f"rsync -c finds files differing in {dest} where the verify found none: {files[:5]}")
    return seconds, items


def measure_verify():
    dest = f"{ROOT}/dst-a"
    for host in (SOURCE_HOST, DEST_HOST):
        host_sh(host, f"rm -rf {MANIFESTS}")
    cold = drop_caches()
    ours, summary = verify(dest)
    drop_caches()
    theirs, items = rsync_check(dest)
    drop_caches()
    md5, _items = rsync_check(dest, "md5")
    drop_caches()
    kept, kept_summary = verify(dest)
    print(
        f"(d) verify (xxh128, {'page cache dropped' if cold else 'WARM: no drop_caches'}) {ours:.1f} s: "
        f"{summary}",
        flush=True,
    )
    print(
        f"(d) rsync -aH -c --dry-run over ssh {theirs:.1f} s (rsync 3.2: xxh128)"
        + (f" (lists {len(items)} directories by their times only, e.g. {items[0]!r})" if items else "")
        + f"; with --checksum-choice=md5 (rsync 3.1's checksum) {md5:.1f} s",
        flush=True,
    )
    print(f"(e) verify with kept manifests {kept:.1f} s: {kept_summary}", flush=True)
    return {"ours": ours, "rsync": theirs, "rsync_md5": md5, "kept": kept}


def shorter(text, most=240):
    """text, or its sentences that fit in ``most`` characters and an ellipsis."""
    if len(text) <= most:
        return text
    cut = text.rfind(". ", 0, most)
    return (text[: cut + 1] if cut > 0 else text[:most]) + " ..."


def times(ratio):
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"


def report(ours, rsync, resume, checks):
    """The final line; a failed resume makes it start with FAILED (the bench then exits 1)."""
    link = ours["rate"] / LINK
    verify_ratio = checks["rsync"] / checks["ours"]
    if "wire" not in resume:
        resumed = f"resume FAILED: the rerun after the kill failed ({shorter(resume['error'])})"
    else:
        met = "met" if resume["wire"] <= GOAL_RESUME else "missed"
        resumed = (
            f"resume sent {resume['wire']:.2f}x the missing bytes on the wire "
            f"(payload {resume['payload']:.2f}x; goal <= {GOAL_RESUME}x on the wire: {met})"
        )
        if "error" in resume:
            resumed += f" but the resumed copy is NOT complete ({shorter(resume['error'])})"
    print(
        f"bench transfer: {'FAILED, ' if 'error' in resume else ''}"
        f"data_transfer {ours['rate'] / 1e6:.1f} MB/s = {link:.2f}x link "
        f"(bytes sent in the streams' time; task wall {ours['wall_sent_rate'] / 1e6:.1f} MB/s = "
        f"{ours['wall_sent_rate'] / LINK:.2f}x; "
        f"goal >= {GOAL_LINK}x: {'met' if link >= GOAL_LINK else 'missed'}); "
        f"one rsync {rsync['rate'] / 1e6:.1f} MB/s = {rsync['rate'] / LINK:.2f}x link; "
        f"data_transfer {times(ours['wall_rate'] / rsync['rate'])} rsync (wall to wall); {resumed}; "
        f"verify {times(verify_ratio)} faster than rsync -c (goal {GOAL_VERIFY:.0f}x: "
        f"{'met' if verify_ratio >= GOAL_VERIFY else 'missed'}), "
        f"kept manifests {times(checks['rsync'] / checks['kept'])} (against rsync -c with md5: "
        f"{times(checks['rsync_md5'] / checks['ours'])}, kept {times(checks['rsync_md5'] / checks['kept'])})"
    )


def record_rows(ours, rsync, resume, checks, total):
    """The final line's figures as rows: rates in MB/s, the resume in MB, the checks in seconds."""
    size = {"MB": round(total / 1e6)}
    baseline = "one rsync -aH over ssh"
    for metric, rate, goal in (
        ("copy rate: bytes sent / the streams' time", ours["rate"], f">= {GOAL_LINK}x link"),
        ("copy rate wall to wall: the tree / the task's wall", ours["wall_rate"], None),
    ):
        record(
            "transfer",
            metric=metric,
            ours=rate / 1e6,
            baseline=rsync["rate"] / 1e6,
            baseline_name=baseline,
            limit=LINK / 1e6,
            limit_name=f"the link (netcap: {FLOW_MB} MB/s per connection, {LINK_MB} MB/s in all)",
            unit="MB/s",
            ratio=rate / rsync["rate"],
            goal=goal,
            met=rate / LINK >= GOAL_LINK if goal else None,
            size=size,
            notes=f"{rate / LINK:.2f}x link",
        )
    resumed = {"ours": None, "baseline": None, "ratio": None, "met": None}
    notes = ""
    if "wire" in resume:
        resumed = {
            "ours": resume["wire_bytes"] / 1e6,
            "baseline": resume["missing_bytes"] / 1e6,
            "ratio": resume["wire"],
            "met": resume["wire"] <= GOAL_RESUME,
        }
        notes = f"payload (bytes_sent) {resume['payload']:.2f}x the missing bytes"
    if "error" in resume:
        notes = f"{notes}; FAILED: {shorter(resume['error'])}".lstrip("; ")
    record(
        "transfer",
        metric="resume after kill -9: bytes on the wire",
        baseline_name="the bytes still missing at the destination",
        unit="MB",
        goal=f"<= {GOAL_RESUME}x",
        size=size,
        notes=notes,
        **resumed,
    )
    for metric, ours_s, theirs_s, theirs, goal in (
        ("verify (xxh128 manifests both sides)", checks["ours"], checks["rsync"], "xxh128", GOAL_VERIFY),
        ("verify with kept manifests", checks["kept"], checks["rsync"], "xxh128", None),
        ("verify (xxh128 manifests both sides)", checks["ours"], checks["rsync_md5"], "md5", None),
    ):
        record(
            "transfer",
            metric=metric,
            ours=ours_s,
            baseline=theirs_s,
            baseline_name=f"rsync -aH -c --dry-run over ssh ({theirs})",
            unit="s",
            ratio=theirs_s / ours_s,
            goal=f">= {goal:.0f}x" if goal else None,
            met=theirs_s / ours_s >= goal if goal else None,
            size=size,
            notes="page cache dropped before each",
        )


def cleanup():
    errors = []
    for step in (
        lambda: netcap("clear"),
        lambda: processes(SOURCE_HOST, f"{ROOT}/dst-", "all"),
        lambda: host_sh(DEST_HOST, f"rm -rf {ROOT}/dst-a {ROOT}/dst-b {ROOT}/dst-c {SMALL_DEST} {STATE}"),
        lambda: host_sh(SOURCE_HOST, f"rm -rf {STATE}"),
    ):
        try:
            step()
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
    return errors


def main():
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, on_signal)
    error = None
    try:
        tree = recipe()
        files, total = setup(tree)
        netcap(FLOW_MB, LINK_MB)
        print(
            f"caps: each connection into {DEST_HOST} at most {FLOW_MB} MB/s, all at most {LINK_MB} MB/s",
            flush=True,
        )
        ours = measure_ours(tree, total)
        measure_growth(ours)
        rsync = measure_rsync(total)
        resume = measure_resume(tree, files)
        netcap("clear")
        checks = measure_verify()
        if "error" not in resume:
            try:
                seconds, summary = verify(resume["dest"])
                print(f"resumed copy: verify {seconds:.1f} s: {summary}", flush=True)
            except BenchError as exc:  # the rerun said it finished: reported with its figures
                print(f"resumed copy: {exc}", flush=True)
                resume["error"] = str(exc)
    except (BenchError, OSError, subprocess.SubprocessError, KeyboardInterrupt) as exc:
        error = str(exc) or type(exc).__name__
    finally:
        problems = cleanup()
        if problems:
            print("cleanup: " + "; ".join(problems), flush=True)
            error = error or "cleanup: " + "; ".join(problems)
    if error:
        print(f"bench transfer: FAILED: {error}")
        return 1
    report(ours, rsync, resume, checks)
    record_rows(ours, rsync, resume, checks, total)
    return 1 if "error" in resume else 0


if __name__ == "__main__":
    sys.exit(main())
