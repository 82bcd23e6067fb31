"""Fixtures for the tests that use the real Kubernetes control plane (tests/testbed/controlplane).

Import them into a test module with ``from .k8s_fixtures import *`` (pytest picks fixtures up
from the module namespace). Under CI=true a control plane that cannot be started fails the
test; otherwise the test is skipped with the reason.

    controlplane    session: `tests/testbed/up controlplane` (idempotent); the kubeconfig path
    k8s_client      session: a strata.ops K8sClient on it
    lab_cluster     session: layers 2, 3 and 4 converged once on inventories/lab (layer 3
                    asserts layer 2, the health check asserts layer 4; the lab hosts may
                    be new), nodes strata-lab-1/2 registered; {"kubeconfig", "stdout"}
    k8s_namespace   per test: a unique namespace, deleted afterwards

Helpers: run_playbook(name, *args) (one at a time across pytest-xdist workers: the lab hosts
         and their /etc/fstab are shared), recap(stdout) -> {host: {ok, changed, failed, ...}},
         kubeconfig_variant(path, tmp_path, **changes) writes a modified copy of a kubeconfig.
"""

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import uuid

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .conftest import CACHE, REPO, skip_or_fail

__all__ = [
    "controlplane",
    "k8s_client",
    "k8s_namespace",
    "kubeconfig_variant",
    "lab_cluster",
    "recap",
    "run_playbook",
]

INVENTORY = os.path.join(REPO, "inventories", "lab")


@contextlib.contextmanager
def lab_lock():
    """Held while a playbook runs on the lab hosts, by every pytest-xdist worker."""
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, "lab-playbook.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def run_playbook(name, *args, timeout=600):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    argv = ["ansible-playbook", "-i", INVENTORY, os.path.join(REPO, "playbooks", name), *args]
    with lab_lock():
        return subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )


def recap(stdout):
    """PLAY RECAP counters per host."""
    hosts = {}
    for line in stdout.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def kubeconfig_variant(path, tmp_path, name="variant", server=None, user=None):
    """A copy of the kubeconfig at ``path`` with another server URL and/or user entry."""
    with open(path) as handle:
        doc = yaml.safe_load(handle)
    if server:
        for cluster in doc["clusters"]:
            cluster["cluster"]["server"] = server
    if user:
        for entry in doc["users"]:
            entry["user"] = user
    out = tmp_path / name
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return str(out)


@pytest.fixture(scope="session")
def controlplane():
    """The kubeconfig of the test bed's control plane, started when it is not running."""
    if os.geteuid() != 0:
        skip_or_fail("tests/testbed/up needs root")
    try:
        proc = subprocess.run(
            [os.path.join(REPO, "tests", "testbed", "up"), "controlplane"],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    except subprocess.TimeoutExpired:
        skip_or_fail("tests/testbed/up controlplane did not finish within 20 min")
    if proc.returncode != 0:
        skip_or_fail("tests/testbed/up controlplane failed: " + proc.stderr.strip()[-2000:])
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if not os.path.isfile(path):
        skip_or_fail(f"tests/testbed/up controlplane printed no kubeconfig path: {proc.stdout!r}")
    return path


@pytest.fixture(scope="session")
def k8s_client(controlplane):
    return k8s.get_client(controlplane)


@pytest.fixture(scope="session")
def lab_cluster(controlplane):
    """Layers 2, 3 and 4 on the lab inventory, once per session (the lab hosts must run)."""

    def converge(name):
        proc = run_playbook(name)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            if "UNREACHABLE" in proc.stdout or "Failed to connect" in tail:
                skip_or_fail("the lab hosts are not running (tests/testbed/up starts them): " + tail)
            pytest.fail(f"playbooks/{name} failed:\n" + tail)
        return proc.stdout

    converge("layer2_host_storage.yml")
    layer3_stdout = converge("layer3_cluster.yml")
    converge("layer4_workload_storage.yml")
    return {"kubeconfig": controlplane, "stdout": layer3_stdout}


@pytest.fixture
def k8s_namespace(k8s_client, request):
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"it-{base}-{uuid.uuid4().hex[:6]}"
    k8s_client.create("Namespace", {"metadata": {"name": name, "labels": {"strata.io/test": "integration"}}})
    yield name
    k8s_client.delete("Namespace", name)
