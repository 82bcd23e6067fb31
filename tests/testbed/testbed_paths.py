"""Where the test bed keeps what it builds and fetches: the Python side of lib.sh's STRATA_CACHE.

Tests and benchmarks import these names instead of spelling the default out again.
"""

import contextlib
import fcntl
import glob
import os

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
