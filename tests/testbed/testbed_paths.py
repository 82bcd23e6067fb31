"""Where the test bed keeps what it builds and fetches: the Python side of lib.sh's STRATA_CACHE.

Tests and benchmarks import these names instead of spelling the default out again.
"""

import os

CACHE = os.environ.get("STRATA_CACHE", os.path.expanduser("~/.cache/strata-ops"))
# criu, crit and crictl (tests/testbed/up, tests/testbed/cri/start)
BIN = os.path.join(CACHE, "bin")
LAB_KUBECONFIG = os.path.join(CACHE, "controlplane", "strata-lab.kubeconfig")
