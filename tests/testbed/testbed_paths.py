"""Where the test bed keeps what it builds and fetches, and where its containerds listen: the Python
side of lib.sh (its STRATA_CACHE, sockets and folders).

Tests and benchmarks import these names instead of spelling the default out again.
"""

import contextlib
import fcntl
import functools
import glob
import os
import subprocess
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("STRATA_CACHE", os.path.expanduser("~/.cache/strata-ops"))
# criu, crit and crictl (tests/testbed/up, tests/testbed/cri/start)
BIN = os.path.join(CACHE, "bin")
LAB_KUBECONFIG = os.path.join(CACHE, "controlplane", "strata-lab.kubeconfig")


def kubectl_path():
    """The kubectl built with the lab control plane (newest version), or None."""
    found = sorted(glob.glob(os.path.join(CACHE, "controlplane", "v1.*", "bin", "kubectl")))
    return found[-1] if found else None


@contextlib.contextmanager
def lab_lock():
    """Held while a playbook runs on the lab hosts: by every pytest-xdist worker, the benchmarks
    and manual runs (`flock ~/.cache/strata-ops/lab-playbook.lock ansible-playbook ...`)."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, "lab-playbook.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def lib_sh_value(expression):
    """The output of a shell expression over tests/testbed/lib.sh (its names and functions, such as
    ``cri_image`` or ``echo $NODE_SOCKET``): one definition for the scripts and the tests."""
    argv = ["bash", "-c", f"source {REPO}/tests/testbed/lib.sh && {expression}"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


# containerd release -> (lib.sh's name of its socket, lib.sh's function that prints its binaries'
# folder; None: Debian bookworm's containerd package, /usr/bin)
CONTAINERD_RELEASES = {
    "1.6": ("CRI_SOCKET", None),
    "1.7": ("CRI17_SOCKET", "containerd17_bin"),
    "2.3": ("NODE_SOCKET", "containerd2_bin"),
}


@functools.cache  # lib.sh's answers do not change while a test run or bench runs
def containerd_of(release):
    """The test bed's containerd ``release`` (1.6 and 1.7: tests/testbed/cri/start, 2.3:
    tests/testbed/node/start): its socket and its own ctr, as k3s and MicroK8s bring theirs."""
    socket, bin_function = CONTAINERD_RELEASES[release]
    folder = lib_sh_value(bin_function) if bin_function else "/usr/bin"
    return SimpleNamespace(address=lib_sh_value(f"echo ${socket}"), ctr=os.path.join(folder, "ctr"))
