# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CRIU a container runtime dumps and restores with, and the refusal of a dump it cannot read.

containerd starts its runc shim with its own environment, the shim starts runc, and runc runs
``criu`` from that PATH (runc's ``--criu`` option, default "criu"). So the CRIU of ``docker start
--checkpoint``, ``ctr containers checkpoint`` and ``ctr containers restore`` is the first ``criu``
on the PATH of the containerd process serving them: read here through /proc/PID/environ and
/proc/PID/root (a containerd in a mount namespace of its own, as a snap's, is reached too).

CRIU reads the images of its own and of older releases; a release older than the one that wrote
a dump may not know what the dump holds (new image kinds, new fields) and fails part way through
the restore. A restore is therefore refused, before anything is made, when every CRIU that could
restore it is of an older release (major.minor) than the CRIU that dumped it.
"""

import os

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint

# containerd's PATH when its environment has none: Go's exec.LookPath then finds nothing, as runc does.
NO_PATH = b""


def containerd_processes(proc="/proc"):
    """(pid, environment as {bytes: bytes}) of every running containerd this process may read."""
    try:
        pids = os.listdir(proc)
    except OSError:
        return
    for pid in pids:
        if not pid.isdigit():
            continue
        try:
            with open(os.path.join(proc, pid, "comm")) as handle:
                if handle.read().strip() != "containerd":
                    continue
            with open(os.path.join(proc, pid, "environ"), "rb") as handle:
                env = dict(v.split(b"=", 1) for v in handle.read().split(b"\0") if b"=" in v)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        yield pid, env


def _listening_inodes(address, proc):
    """Inodes of the unix sockets bound to ``address`` (/proc/net/unix: Num RefCount Protocol Flags
    Type St Inode Path, proc(5))."""
    inodes = set()
    try:
        with open(os.path.join(proc, "net", "unix")) as handle:
            next(handle, None)
            for line in handle:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == address:
                    inodes.add(fields[6])
    except OSError:
        pass
    return inodes


def _holds(pid, inodes, proc):
    fd_dir = os.path.join(proc, pid, "fd")
    sockets = {f"socket:[{inode}]" for inode in inodes}
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(os.path.join(fd_dir, name)) in sockets:
                return True
        except OSError:
            continue
    return False


def criu_of(pid, env, run_command, proc="/proc"):
    """{"pid", "path" (as containerd sees it, or None), "version" (a tuple, or None when unknown)}
    of the criu containerd ``pid`` hands its runc shim."""
    root = os.path.join(proc, pid, "root")
    for directory in env.get(b"PATH", NO_PATH).decode(errors="replace").split(os.pathsep):
        if not directory.startswith("/"):
            continue  # Go's exec.LookPath refuses what a relative PATH entry finds (exec.ErrDot)
        reach = os.path.join(root, directory.lstrip("/"), "criu")
        if os.path.isfile(reach) and os.access(reach, os.X_OK):
            try:
                version = criu.read_version(run_command, reach)
            except criu.CriuError:
                version = None  # runs only in its own mount namespace, or says no version: not judged
            return {"pid": int(pid), "path": os.path.join(directory, "criu"), "version": version}
    return {"pid": int(pid), "path": None, "version": None}


def containerd_crius(run_command, proc="/proc", address=None):
    """criu_of each containerd that may run a checkpoint or restore: the one serving ``address``
    when it is found, else every containerd here (dockerd's is not told apart from the others)."""
    processes = list(containerd_processes(proc))
    if address:
        inodes = _listening_inodes(address, proc)
        serving = [(pid, env) for pid, env in processes if inodes and _holds(pid, inodes, proc)]
        processes = serving or processes
    return [criu_of(pid, env, run_command, proc) for pid, env in processes]


def refuse_older(checkpoint, dumped_by, crius, where):
    """Raise BadCheckpoint when the dump's CRIU (``dumped_by``, its version string) is of a newer
    release than every CRIU in ``crius`` (containerd_crius) whose version is known. Nothing is
    judged without a recorded version or a known restorer."""
    if not dumped_by:
        return
    try:
        dumped = criu.parse_version(f"Version: {dumped_by}")
    except criu.CriuError:
        return
    known = [c for c in crius if c["version"] is not None]
    if not known or any(c["version"][:2] >= dumped[:2] for c in known):
        return
    found = ", ".join(sorted({f"{c['path']} (CRIU {criu.version_string(c['version'])})" for c in known}))
    raise BadCheckpoint(
        f"{checkpoint} was dumped by CRIU {dumped_by}, and the CRIU that would restore it is older: "
        f"{found}, the criu on {where} PATH, which runc runs. CRIU reads the images of its own and "
        f"older releases only: install CRIU >= {criu.version_string(dumped[:2])} on that PATH, or restore "
        "on a host that has one. Nothing was created"
    )


def refuse_unreadable(checkpoint, manifest, run_command, proc, *, address, where):
    """refuse_older for a dump by its manifest, against the CRIU of the containerd serving
    ``address`` (every containerd when None). A manifest that names no CRIU version asks nothing."""
    dumped_by = (manifest.get("criu") or {}).get("version")
    if dumped_by:
        refuse_older(checkpoint, dumped_by, containerd_crius(run_command, proc, address), where)
