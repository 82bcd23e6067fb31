# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The destination, reached over ssh: command lines, the probe, the range receiver."""

import json
import shlex
import subprocess

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.tree_copy.plan import WORK_DIR

# ssh's own exit status when the connection failed (ssh(1), EXIT STATUS); rsync's statuses for a
# lost or timed-out connection (rsync(1), EXIT VALUES: 10 socket I/O, 12 protocol data stream,
# 30 timeout in data send/receive, 35 timeout waiting for daemon connection, 255 from ssh).
SSH_CONNECTION_FAILED = 255
RSYNC_RETRYABLE = {10, 12, 30, 35, 255}
# rsync exit 23: partial transfer due to error (a file it could not read, among others); 24: some
# source files vanished before they could be sent.
RSYNC_PARTIAL = {23, 24}


def command_line(args):
    """One remote shell command line of ``args``, each quoted (ssh joins its arguments with spaces)."""
    return " ".join(shlex.quote(arg) for arg in args)


class RemoteError(StrataError):
    """The destination cannot be reached or refused what was asked of it."""


class Destination:
    """user@host:path over ssh with the operator's options; every command goes through ``ssh()``."""

    def __init__(
        self, host, path, *, user=None, port=22, identity_file=None, ssh_options=(), connect_timeout=10
    ):
        self.host, self.path, self.user, self.port = host, path.rstrip("/") or "/", user, port
        self.target = f"{user}@{host}" if user else host
        # BatchMode: never wait for a password prompt no one will answer. The keep-alives end a
        # stream whose peer went away within 30 s, so it is retried instead of hanging.
        self.ssh_command = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
            "-p",
            str(port),
        ]
        if identity_file:
            self.ssh_command += ["-i", identity_file]
        for option in ssh_options:
            self.ssh_command += ["-o", option]

    @property
    def work_dir(self):
        return f"{self.path}/{WORK_DIR}"

    def ssh(self, *remote_args):
        """The command line that runs ``remote_args`` on the destination (each argument quoted:
        ssh joins them with spaces for the remote shell)."""
        return [*self.ssh_command, self.target, "--", command_line(remote_args)]

    def rsync_shell(self):
        """rsync's -e value: the same ssh, as one string rsync splits on spaces."""
        return " ".join(shlex.quote(part) for part in self.ssh_command)

    def rsync_dest(self):
        # rsync's remote path syntax (rsync(1), USAGE): HOST:DEST; a trailing slash copies into it.
        return f"{self.target}:{self.path}/"

    def describe(self):
        return f"{self.target}:{self.path}"


# Run on the destination by ``probe``: the free space where the tree goes (its nearest existing
# parent) and the bytes written of every range of a large file (WORK_DIR markers), as JSON.
PROBE = r"""
import json, os, sys
path, work = sys.argv[1], sys.argv[2]
probe = path
while not os.path.isdir(probe) and probe not in ("/", ""):
    probe = os.path.dirname(probe)
st = os.statvfs(probe or "/")
ranges, parts = {}, 0
if os.path.isdir(work):
    for name in os.listdir(work):
        key, _, offset = name.partition(".")
        if offset == "part":
            parts += os.stat(os.path.join(work, name)).st_blocks * 512
        elif offset.isdigit():
            try:
                with open(os.path.join(work, name)) as handle:
                    ranges.setdefault(key, {})[offset] = int(handle.read() or 0)
            except (OSError, ValueError):
                pass
print(json.dumps({"free": st.f_bavail * st.f_frsize, "checked": probe, "exists": os.path.isdir(path),
                  "ranges": ranges, "parts_bytes": parts}))
"""

# Run on the destination, one per stream for all its ranges (one ssh connection, not one per range:
# sshd's MaxStartups drops connections beyond 10 that are still authenticating). Requests are JSON
# lines on stdin, answers lines on stdout:
#   {"op": "range", "key", "offset", "size", "segments": [[start, length], ...]}
#       -> the data bytes already written ("N"); then that many fewer bytes of the segments follow
#          (the range's data in order, holes left out), are written in place, synced, recorded in
#          the range's marker, and "ok" answers. A cut connection or a signal records what arrived.
#   {"op": "finish", "key", "path", "mtime_ns", "mode"} -> the file gets its mode and times and is
#       moved into place, its markers removed; "ok".
# The part file is first extended to the full size, so what is never written stays a hole.
RECEIVER = r"""
import glob, json, os, signal, sys
root, work = sys.argv[1], sys.argv[2]
def stop(signum, frame):
    raise SystemExit(3)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGHUP, stop)
source, answer = sys.stdin.buffer, sys.stdout
def say(text):
    answer.write(text + "\n")
    answer.flush()
def read_marker(marker):
    try:
        with open(marker) as handle:
            return int(handle.read() or 0)
    except (OSError, ValueError):
        return 0
def write_marker(marker, done):
    with open(marker + ".tmp", "w") as handle:
        handle.write("%d" % done)
    os.replace(marker + ".tmp", marker)
def receive(request):
    part = os.path.join(work, request["key"] + ".part")
    marker = os.path.join(work, "%s.%d" % (request["key"], request["offset"]))
    segments = request["segments"]
    total = sum(length for _start, length in segments)
    done = min(read_marker(marker), total)
    say("%d" % done)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < request["size"]:
            os.ftruncate(fd, request["size"])
        skip = done
        for start, length in segments:
            if skip >= length:
                skip -= length
                continue
            position, end, skip = start + skip, start + length, 0
            while position < end:
                data = source.read1(min(1 << 20, end - position))
                if not data:
                    raise SystemExit(3)
                view = memoryview(data)
                while view:
                    written = os.pwrite(fd, view, position)
                    view, position, done = view[written:], position + written, done + written
    finally:
        os.fdatasync(fd)
        os.close(fd)
        write_marker(marker, done)
    say("ok")
def finish(request):
    part = os.path.join(work, request["key"] + ".part")
    final = os.path.join(root, request["path"])
    os.chmod(part, request["mode"])
    os.utime(part, ns=(request["mtime_ns"], request["mtime_ns"]))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.replace(part, final)
    for marker in glob.glob(os.path.join(work, glob.escape(request["key"]) + ".[0-9]*")):
        os.unlink(marker)
    say("ok")
os.makedirs(work, exist_ok=True)
say("ready")
for line in iter(source.readline, b""):
    request = json.loads(line)
    {"range": receive, "finish": finish}[request["op"]](request)
"""


def python(destination, script, *args):
    return destination.ssh("python3", "-c", script, *args)


def probe(destination, timeout):
    """Free space, whether the path exists, and the ranges already written, in one ssh call."""
    command = python(destination, PROBE, destination.path, destination.work_dir)
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RemoteError(
            f"{destination.describe()}: no answer over ssh within {timeout} s; check that the host is up and "
            "reachable on its ssh port from the source host"
        ) from None
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise RemoteError(
            f"{destination.describe()}: ssh from the source host failed (exit {done.returncode}: "
            f"{reason[-1] if reason else 'no message'}); check the host name, port, user and key "
            "(ssh -o BatchMode=yes must log in without a prompt) and that python3 is installed there"
        )
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise RemoteError(
            f"{destination.describe()}: the probe printed no JSON: {done.stdout[:200]!r}"
        ) from None
