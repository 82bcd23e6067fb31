"""The bad-input matrix: every module and layer playbook, one wrong input at a time.

Each case of bad_input_cases.yaml runs the real module through `ansible localhost -m` (or a layer
playbook on the lab hosts) against the real test bed: the test bed's zfs-fuse pool, the lab
control plane, Docker, CRIU, local HTTP servers that answer badly. A case passes when the run
failed through the module's own failure path (no crash, no traceback in the result or the
output), the message names the input and what to do (the case's `says`), and the parts of the
system the case names are exactly as before (see the YAML's header). `ok: true` cases are inputs
that must succeed without changing anything and say why (exit without enter; a freshness check
whose RPC endpoints all fail, whose verdict is "unknown" with each endpoint's error).
"""

import http.server
import json
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
import yaml

from tests.integration.conftest import CACHE, POOL, TESTBED_BIN, adhoc_run, destroy_tree, zfs
from tests.integration.k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from tests.integration.k8s_fixtures import kubeconfig_variant, run_playbook

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
with open(os.path.join(HERE, "bad_input_cases.yaml")) as _handle:
    CASES = yaml.safe_load(_handle)
# The smallest name agave loads: a full archive of slot 100 whose hash is 32 zero bytes in base58.
ARCHIVE = "snapshot-100-11111111111111111111111111111111.tar.zst"


class BadServer(http.server.BaseHTTPRequestHandler):
    """/html answers a proxy's HTML error page; anything else a JSON-RPC error object."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/html":
            body, ctype = b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"
        else:
            error = {"code": -32005, "message": "Node is behind by 4242 slots"}
            body, ctype = json.dumps({"jsonrpc": "2.0", "id": 1, "error": error}).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture(scope="module")
def endpoints():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BadServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    probe = socket.socket()  # a port that was free a moment ago: nothing listens there
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    yield {
        "html": f"http://127.0.0.1:{server.server_address[1]}/html",
        "rpc_error": f"http://127.0.0.1:{server.server_address[1]}/rpc",
        "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
        "closed": f"http://127.0.0.1:{closed_port}",
    }
    server.shutdown()
    silent.close()


def settled(client, namespace, timeout=30):
    """Wait until the deployment controller has taken the case's Deployment (its revision
    annotation and observedGeneration are there): it writes them a moment after the create, and
    a case's before/after fingerprint must not see that write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = client.get("Deployment", "solana", namespace)
        annotations = obj["metadata"].get("annotations") or {}
        status = obj.get("status") or {}
        if "deployment.kubernetes.io/revision" in annotations and status.get("observedGeneration") == obj[
            "metadata"
        ].get("generation"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the deployment controller did not take {namespace}/solana within {timeout} s")


@pytest.fixture
def bed(zfs_pool, lab_cluster, k8s_client, k8s_namespace, endpoints, tmp_path):  # noqa: PLR0917 (fixtures)
    """The lab cluster converged (its nodes strata-lab-1/2 are part of the fingerprint), a scratch
    dataset, the stand-in servers' endpoints and a namespace."""
    scratch = f"{zfs_pool}/badin-{uuid.uuid4().hex[:8]}"
    zfs("create", "-o", f"mountpoint={tmp_path}/zfs", scratch)
    snapdir = tmp_path / "snapshots"
    snapdir.mkdir()
    (snapdir / ARCHIVE).write_bytes(b"\0" * 4096)
    (tmp_path / "a-file").write_text("strata-lab-1\n")
    (tmp_path / "config.toml").write_text('concurrent = \n[[runners]\nname = "x"\n')
    (tmp_path / "not-a-dump").mkdir()
    k8s_client.create(
        "Deployment",
        {
            "metadata": {"name": "solana", "namespace": k8s_namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "solana"}},
                "template": {
                    "metadata": {"labels": {"app": "solana"}},
                    "spec": {"containers": [{"name": "c", "image": "strata-ops-host:latest"}]},
                },
            },
        },
        namespace=k8s_namespace,
    )
    settled(k8s_client, k8s_namespace)
    values = dict(
        endpoints,
        pool=zfs_pool,
        scratch=scratch,
        tmp=str(tmp_path),
        snapdir=str(snapdir),
        kubeconfig=lab_cluster["kubeconfig"],
        namespace=k8s_namespace,
        criu=os.path.join(TESTBED_BIN, "criu"),
        unreachable_kubeconfig=kubeconfig_variant(
            lab_cluster["kubeconfig"], tmp_path, server=endpoints["closed"]
        ),
    )
    yield {"values": values, "client": k8s_client, "tmp": tmp_path, "scratch": scratch}
    destroy_tree(scratch)


def render(value, values):
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, list):
        return [render(v, values) for v in value]
    if isinstance(value, dict):
        return {k: render(v, values) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- fingerprints


def zfs_print(bed):
    names = zfs("list", "-H", "-r", "-o", "name", bed["scratch"]).stdout
    props = zfs("get", "-H", "-r", "-s", "local", "-o", "name,property,value", "all", bed["scratch"]).stdout
    missing = subprocess.run(["zfs", "list", "nosuchpool"], capture_output=True, check=False).returncode
    return names, props, missing


def k8s_print(bed):
    client, namespace = bed["client"], bed["values"]["namespace"]
    nodes = []
    for name in ("strata-lab-1", "strata-lab-2"):
        node = client.get("Node", name)
        nodes.append(
            (
                name,
                node["metadata"].get("labels"),
                node["spec"].get("taints"),
                node["spec"].get("unschedulable"),
            )
        )
    objects = []
    for kind in ("Deployment", "StatefulSet", "ConfigMap"):
        items, _rv = client.list(kind, namespace=namespace)
        objects += [
            (
                kind,
                o["metadata"]["name"],
                o["metadata"].get("generation"),
                json.dumps(
                    [
                        o.get("spec"),
                        o.get("data"),
                        o["metadata"].get("labels"),
                        o["metadata"].get("annotations"),
                    ],
                    sort_keys=True,
                ),
            )
            for o in items
        ]
    return nodes, sorted(objects)


def files_print(bed):
    out = []
    for root, dirs, files in os.walk(bed["tmp"]):
        dirs[:] = [d for d in dirs if d != "zfs"]  # the scratch dataset has its own fingerprint
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            info = os.lstat(path)
            data = b""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    data = handle.read()
            out.append((os.path.relpath(path, bed["tmp"]), info.st_mode, data))
    return sorted(out)


def lab_print(_bed):
    script = "cat /etc/fstab; findmnt -rn -o TARGET,FSTYPE,OPTIONS | sort; zfs list -H -o name,mountpoint"
    proc = subprocess.run(
        ["docker", "exec", "strata-lab-1", "sh", "-c", script], capture_output=True, text=True, check=False
    )
    return proc.returncode, proc.stdout


PRINTS = {"zfs": zfs_print, "k8s": k8s_print, "files": files_print, "lab": lab_print}


# ---------------------------------------------------------------- runs


def playbook_result(name, extra_vars):
    proc = run_playbook(name, "-e", json.dumps(extra_vars))
    output = proc.stdout + proc.stderr
    return {"failed": proc.returncode != 0, "msg": output}, output


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input(case, bed):
    values = bed["values"]
    prints = case["unchanged"]
    before = {kind: PRINTS[kind](bed) for kind in prints}
    if "module" in case:
        args = render(case["args"], values)
        result, output = adhoc_run(case["module"], args)
    else:
        result, output = playbook_result(case["playbook"], render(case["extra_vars"], values))
    message = result.get("msg", "")
    if case.get("ok"):
        assert result.get("failed") is not True and result.get("changed") is False, result
    else:
        assert result.get("failed") is True, result
        assert not message.startswith("Task failed: Module failed"), message
    assert "Traceback" not in output, output[-3000:]
    for text in case["says"]:
        expected = render(text, values)
        assert expected in message, f"{expected!r} not in {message[-2000:]!r}"
    after = {kind: PRINTS[kind](bed) for kind in prints}
    for kind in prints:
        assert after[kind] == before[kind], f"{kind} changed"


def test_the_matrix_covers_every_module_and_forty_cases():
    modules = {case["module"] for case in CASES if "module" in case}
    shipped = {
        name[:-3] for name in os.listdir(os.path.join(REPO, "plugins", "modules")) if name.endswith(".py")
    }
    assert len(CASES) >= 40
    assert shipped == modules, shipped ^ modules
    assert len({case["id"] for case in CASES}) == len(CASES)
    assert CACHE and POOL
