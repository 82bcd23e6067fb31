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

Helpers: run_playbook(name, *args, env=None) (one at a time across pytest-xdist workers: the
         lab hosts and their /etc/fstab are shared), recap(stdout) -> {host: {ok, changed, ...}},
         kubeconfig_variant(path, tmp_path, **changes) writes a modified copy of a kubeconfig.

The validator stand-in (agave cannot run here): VALIDATOR_SERVER listens on <ledger>/admin.rpc
and exits a moment after an "exit" request, recording when; agave_cli(version) is the text of an
`agave-validator` CLI that behaves as agave's `exit` subcommand does in that version
(anza-xyz/agave validator/src/commands/exit): before 3.0 it returns right after the request
unless given --wait-for-exit; 3.0 waits by default (--no-wait-for-exit opts out, --wait-for-exit
is accepted with a deprecation warning); 4.0 refuses --wait-for-exit.
"""

import fcntl
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .conftest import CACHE, REPO, lab_lock, skip_or_fail

__all__ = [
    "VALIDATOR_SERVER",
    "agave_cli",
    "controlplane",
    "k8s_client",
    "k8s_namespace",
    "kubeconfig_variant",
    "lab_cluster",
    "recap",
    "run_playbook",
]

INVENTORY = os.path.join(REPO, "inventories", "lab")


def run_playbook(name, *args, timeout=600, env=None):
    env = dict(
        os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {})
    )
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


def _converge(name):
    proc = run_playbook(name)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        if "UNREACHABLE" in proc.stdout or "Failed to connect" in tail:
            skip_or_fail("the lab hosts are not running (tests/testbed/up starts them): " + tail)
        pytest.fail(f"playbooks/{name} failed:\n" + tail)
    return proc.stdout


@pytest.fixture(scope="session")
def lab_cluster(controlplane):
    """Layers 2, 3 and 4 on the lab inventory, once per test run (the lab hosts must run).

    Once per run, not once per xdist worker: the first worker converges, the others find its
    record (keyed by xdist's run id) and wait for it under a lock of its own (run_playbook holds
    the lab lock)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    record = os.path.join(CACHE, "lab-converged", run_id + ".json")
    os.makedirs(os.path.dirname(record), exist_ok=True)
    with open(os.path.join(CACHE, "lab-converge.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if os.path.exists(record):
            with open(record) as done:
                return json.load(done)
        _converge("layer2_host_storage.yml")
        converged = {"kubeconfig": controlplane, "stdout": _converge("layer3_cluster.yml")}
        _converge("layer4_workload_storage.yml")
        for old in os.listdir(os.path.dirname(record)):  # records of earlier runs
            os.remove(os.path.join(os.path.dirname(record), old))
        with open(record, "w") as out:
            json.dump(converged, out)
        return converged


@pytest.fixture
def k8s_namespace(k8s_client, request):
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"it-{base}-{uuid.uuid4().hex[:6]}"
    k8s_client.create("Namespace", {"metadata": {"name": name, "labels": {"strata.io/test": "integration"}}})
    yield name
    k8s_client.delete("Namespace", name)


# The stand-in validator: listens on <ledger>/admin.rpc; on "exit" it answers, takes a moment to
# shut down (mode "hang": never), records when it exited, and exits (closing the connection).
VALIDATOR_SERVER = textwrap.dedent(
    """\
    import os, socket, sys, time
    ledger, mode = sys.argv[1], sys.argv[2]
    path = os.path.join(ledger, "admin.rpc")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    print("ready", flush=True)
    conn, _addr = srv.accept()
    if conn.recv(64).strip() == b"exit":
        conn.sendall(b"exiting\\n")
        if mode == "hang":
            time.sleep(3600)
        time.sleep(1.0)
        os.unlink(path)
        with open(os.path.join(ledger, "exited_at"), "w") as handle:
            handle.write(repr(time.time()))
        os._exit(0)
    """
)


def agave_cli(version, python="/usr/bin/env python3"):
    """Text of an executable `agave-validator` stand-in of that version (see the module doc)."""
    return textwrap.dedent(
        """\
        #!{python}
        import os, socket, sys
        VERSION = {version!r}
        major = int(VERSION.split(".")[0])
        args = sys.argv[1:]
        if args == ["--version"]:
            print("agave-validator %s (src:00000000; feat:0, client:Agave)" % VERSION)
            sys.exit(0)
        ledger = args[args.index("--ledger") + 1]
        if "exit" not in args:
            sys.exit("stand-in: only the exit subcommand")
        if "--wait-for-exit" in args and major >= 4:
            sys.exit("error: unexpected argument '--wait-for-exit' found")
        if "--wait-for-exit" in args and major == 3:
            print("WARN: The --wait-for-exit flag has been deprecated, waiting for exit is now the "
                  "default behavior", file=sys.stderr)
        wait = "--wait-for-exit" in args if major < 3 else "--no-wait-for-exit" not in args
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.path.join(ledger, "admin.rpc"))
        except OSError as exc:
            print("exit request failed: %s" % exc)
            sys.exit(1)
        sock.sendall(b"exit\\n")
        sock.recv(64)
        print("Exit request sent")
        if wait:
            print("Waiting for agave-validator process to terminate")
            while sock.recv(4096):
                pass
            print("Done, agave-validator process has terminated")
        """
    ).format(python=python, version=version)
