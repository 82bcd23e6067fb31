"""The zfs-fuse test bed as tests and benchmarks use it: run zfs, say why the pool cannot be
used, destroy a tree despite zfs-fuse's short "dataset is busy" after unmounts."""

import shutil
import subprocess
import time


class ZfsTestbedError(RuntimeError):
    pass


def zfs(*args, check=True):
    proc = subprocess.run(["zfs", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ZfsTestbedError("zfs {} failed: {}".format(" ".join(args), proc.stderr.strip()))
    return proc


def testbed_problem(pool):
    """Why the ZFS test bed cannot be used (None when it can)."""
    if not shutil.which("zfs") or not shutil.which("zpool"):
        return "the zfs/zpool commands are not installed (tests/testbed/up installs zfs-fuse)"
    proc = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"zpool list failed (is zfs-fuse running?): {proc.stderr.strip()}"
    if pool not in proc.stdout.split():
        return f"pool {pool!r} is not imported (tests/testbed/up creates it)"
    return None


def destroy_tree(name, attempts=30):
    """``zfs destroy -r name``; gone already is fine; retried while zfs-fuse says "busy"."""
    proc = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.3)
        proc = zfs("destroy", "-r", name, check=False)
        if proc.returncode == 0 or "does not exist" in proc.stderr:
            return
    raise ZfsTestbedError(f"could not destroy {name}: {proc.stderr.strip()}")
