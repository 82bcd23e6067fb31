"""playbooks/transfer_to_pod.yml (role data_transfer, entry point pod, module strata.ops.data_serve):
a tree on strata-lab-1 copied into a PersistentVolumeClaim by a pod on the lab cluster's real node
(tests/testbed/node/start: a kubelet on containerd 2.x on this machine), pulling with curl from a
server that strata-lab-1 runs for the copy only.

The claim is bound to a hostPath volume on the node (this machine), so the test reads the copy
directly and compares it with the source entry by entry (content, mode, mtime in seconds, link
targets, hard links). The pod runs the test bed's host image (sh, curl, coreutils), imported into the
node's containerd. After every run - passed or failed - the pod is gone and nothing listens on the
server's port any more.

Needs root, the lab control plane, the node and the lab hosts (tests/testbed/up all).
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from .conftest import REPO, lab_address
from .k8s_fixtures import controlplane  # noqa: F401  # pylint: disable=unused-import
from .test_kubelet_node import LAB_KUBECONFIG, NODE_SOCKET, apply, kubectl, node, wait_pod  # noqa: F401  # pylint: disable=unused-import

pytestmark = pytest.mark.needs("docker")

SRC_HOST = "strata-lab-1"
ROOT = "/srv/it-transfer-pod"
PLAYBOOK = os.path.join(REPO, "playbooks", "transfer_to_pod.yml")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
IMAGE = "docker.io/library/strata-ops-host:latest"
MIB = 1 << 20

# Run on strata-lab-1 (argv: root): the source tree.
MAKE_TREE = r"""
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
os.makedirs(os.path.join(root, "sub dir/día"), exist_ok=True)
os.makedirs(os.path.join(root, "empty dir"), exist_ok=True)
for index in range(30):
    with open(os.path.join(root, "sub dir", "small %02d.txt" % index), "wb") as handle:
        handle.write(rng.randbytes(rng.randrange(1, 40000)))
with open(os.path.join(root, "sub dir/día/big it's.bin"), "wb") as handle:
    handle.write(rng.randbytes(24 << 20))
open(os.path.join(root, "empty"), "wb").close()
with open(os.path.join(root, "linked"), "wb") as handle:
    handle.write(b"hard linked\n")
os.link(os.path.join(root, "linked"), os.path.join(root, "linked twice"))
os.symlink("sub dir/small 01.txt", os.path.join(root, "a link"))
os.chmod(os.path.join(root, "sub dir/small 02.txt"), 0o600)
for number, (folder, dirs, names) in enumerate(os.walk(root)):
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.islink(path):
            os.utime(path, (1700000000 + number, 1700000000 + number))
"""

# Run where a tree is (argv: root): what the copy must keep, as JSON (mtimes in whole seconds:
# the pod sets them with touch -d @SECONDS; owners are not copied).
SNAPSHOT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out, inodes = {}, {}
for folder, dirs, names in os.walk(root):
    for name in dirs + names:
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, root)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            out[rel] = ["link", os.readlink(path)]
        elif stat.S_ISDIR(info.st_mode):
            out[rel] = ["dir", oct(stat.S_IMODE(info.st_mode))]
        else:
            with open(path, "rb") as handle:
                digest = hashlib.sha1(handle.read()).hexdigest()
            inodes.setdefault(info.st_ino, []).append(rel)
            out[rel] = ["file", digest, oct(stat.S_IMODE(info.st_mode)), int(info.st_mtime)]
print(json.dumps({"entries": out, "linked": sorted(sorted(v) for v in inodes.values() if len(v) > 1)}))
"""


def lab(*argv, check=True):
    proc = subprocess.run(["docker", "exec", SRC_HOST, *argv], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)[:200]} on {SRC_HOST}: {proc.stderr}")
    return proc.stdout


def snapshot_source(path):
    return json.loads(lab("python3", "-c", SNAPSHOT, path))


def snapshot_here(path):
    proc = subprocess.run([sys.executable, "-c", SNAPSHOT, path], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def image(node):  # noqa: F811 - the fixture
    """The host image in the node's containerd (sh, curl, coreutils: what the pull needs)."""
    listed = subprocess.run(
        [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if IMAGE not in listed:
        save = subprocess.Popen(["docker", "save", "strata-ops-host:latest"], stdout=subprocess.PIPE)
        subprocess.run(
            [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", "images", "import", "-"],
            stdin=save.stdout,
            capture_output=True,
            check=True,
        )
        assert save.wait() == 0
    return IMAGE


@pytest.fixture
def case(image, controlplane):  # noqa: F811 - the fixture
    """A source tree on strata-lab-1, a claim bound to an empty hostPath volume on the node."""
    name = f"it-pod-{uuid.uuid4().hex[:8]}"
    source, target = f"{ROOT}/{name}/src", f"{ROOT}/{name}/target"
    lab("python3", "-c", MAKE_TREE, source)
    os.makedirs(target)
    apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": target, "type": "Directory"},
            },
        }
    )
    apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    yield {"name": name, "source": source, "target": target, "state": f"{ROOT}/{name}/state"}
    kubectl("delete", "pod", name, "-n", "default", "--ignore-not-found", "--wait=true", check=False)
    kubectl("delete", "pvc", name, "-n", "default", "--ignore-not-found", "--wait=false", check=False)
    kubectl("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)
    lab("rm", "-rf", f"{ROOT}/{name}", check=False)
    shutil.rmtree(f"{ROOT}/{name}", ignore_errors=True)


def pull(case, **extra):
    """Runs the playbook: (rc, the json callback's tasks by name -> the host's result, stdout)."""
    variables = {
        "strata_kubeconfig": LAB_KUBECONFIG,
        "data_transfer_source_host": SRC_HOST,
        "data_transfer_source_path": case["source"],
        "data_transfer_pod_serve_address": lab_address(SRC_HOST),
        "data_transfer_pod_claim": case["name"],
        "data_transfer_pod_name": case["name"],
        "data_transfer_pod_image": IMAGE,
        "data_transfer_pod_image_pull_policy": "Never",
        "data_transfer_pod_node_selector": {"strata.io/real-node": "true"},
        "data_transfer_pod_tolerations": [{"key": "strata.io/real-node", "operator": "Exists"}],
        "data_transfer_pod_timeout": 120,
        "data_transfer_state_dir": case["state"],
        "data_transfer_manifest_dir": f"{case['state']}/manifests",
        **extra,
    }
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )
    proc = subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            os.path.join(REPO, "inventories", "lab"),
            PLAYBOOK,
            "-e",
            json.dumps(variables),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    document = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    tasks = {}
    for task in document["plays"][0]["tasks"]:
        result = task["hosts"].get(SRC_HOST)
        if result is not None:  # named without the role's prefix
            tasks[task["task"]["name"].rpartition(" : ")[2]] = result
    return proc.returncode, tasks, proc.stdout


def served_port(tasks):
    return next(r["port"] for name, r in tasks.items() if name.startswith("Serve the tree") and "port" in r)


def assert_cleaned_up(case, port):
    """The pod is gone and nothing listens on the server's port on strata-lab-1."""
    assert not kubectl(
        "get", "pod", case["name"], "-n", "default", "--ignore-not-found", "-o", "name"
    ).strip()
    listening = lab("ss", "-Hltn", f"sport = :{port}")
    assert not listening.strip(), listening


def fetched(case):
    """The file requests in the server's access log (state_dir/serve/<key>/access.log)."""
    log = lab("sh", "-c", f"cat {case['state']}/serve/*/access.log")
    return [line for line in log.splitlines() if '"GET /' in line and "/f/" in line]


def test_tree_pulled_into_a_claim_is_identical_and_a_rerun_pulls_nothing(case):
    rc, tasks, out = pull(case)
    assert rc == 0, out[-3000:]
    assert tasks["Fail when the volume's copy is not identical"].get("failed") is not True
    assert "identical" in tasks["Summary"]["msg"], tasks["Summary"]["msg"]
    source, copy = snapshot_source(case["source"]), snapshot_here(case["target"])
    assert copy == source
    assert copy["linked"] == [["linked", "linked twice"]]
    port = served_port(tasks)
    assert_cleaned_up(case, port)
    first = len(fetched(case))
    assert first == 32  # every non-empty file once (the empty one is made there), one name of the hard link

    rc, tasks, out = pull(case)
    assert rc == 0, out[-3000:]
    assert len(fetched(case)) == first  # complete files (size and mtime) are not pulled again
    assert snapshot_here(case["target"]) == source
    assert_cleaned_up(case, served_port(tasks))


def test_a_partial_file_left_by_an_earlier_pod_resumes(case):
    big = "sub dir/día/big it's.bin"
    data = subprocess.run(
        ["docker", "exec", SRC_HOST, "cat", f"{case['source']}/{big}"], capture_output=True, check=True
    ).stdout
    os.makedirs(os.path.join(case["target"], "sub dir", "día"))
    with open(os.path.join(case["target"], big + ".strata-part"), "wb") as handle:
        handle.write(data[: 10 * MIB])
    rc, _tasks, out = pull(case)
    assert rc == 0, out[-3000:]
    assert snapshot_here(case["target"]) == snapshot_source(case["source"])
    ranged = [line for line in fetched(case) if '" 206 ' in line]
    assert len(ranged) == 1, fetched(case)  # the big file, from its 10 MiB on
    assert not os.path.exists(os.path.join(case["target"], big + ".strata-part"))


def test_a_differing_file_the_pull_skips_is_named_by_the_verify(case):
    rc, _tasks, out = pull(case)
    assert rc == 0, out[-3000:]
    path = os.path.join(case["target"], "sub dir", "small 03.txt")
    info = os.stat(path)
    with open(path, "r+b") as handle:  # same size, same mtime: the quick check cannot see it
        handle.write(b"X")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    with open(os.path.join(case["target"], "only here"), "w") as handle:
        handle.write("extra\n")
    rc, tasks, out = pull(case)
    assert rc != 0
    verdict = tasks["Fail when the volume's copy is not identical"]
    assert verdict.get("failed") is True
    assert "sub dir/small 03.txt" in tasks["Summary"]["msg"] and "only here" in tasks["Summary"]["msg"]
    assert_cleaned_up(case, served_port(tasks))


def test_a_pod_that_cannot_start_is_removed_and_the_server_stopped(case):
    rc, tasks, _out = pull(
        case, data_transfer_pod_image="docker.io/library/strata-no-such-image:1", data_transfer_pod_timeout=6
    )
    assert rc != 0
    waited = tasks["Wait for the pod to finish (at most data_transfer_pod_timeout seconds)"]
    assert waited.get("failed") is True, waited
    assert tasks["Remove the pod (only one this play started)"].get("changed") is True
    assert_cleaned_up(case, served_port(tasks))
    assert not os.listdir(case["target"])


def test_check_mode_starts_nothing(case):
    proc = subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "--check",
            "-i",
            os.path.join(REPO, "inventories", "lab"),
            PLAYBOOK,
            "-e",
            json.dumps(
                {
                    "strata_kubeconfig": LAB_KUBECONFIG,
                    "data_transfer_source_host": SRC_HOST,
                    "data_transfer_source_path": case["source"],
                    "data_transfer_pod_serve_address": lab_address(SRC_HOST),
                    "data_transfer_pod_claim": case["name"],
                    "data_transfer_pod_name": case["name"],
                    "data_transfer_pod_image": IMAGE,
                    "data_transfer_state_dir": case["state"],
                }
            ),
        ],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "would be pulled by a pod (check mode)" in proc.stdout
    assert not kubectl(
        "get", "pod", case["name"], "-n", "default", "--ignore-not-found", "-o", "name"
    ).strip()
    assert not os.listdir(case["target"])
    assert not lab("sh", "-c", f"ls {case['state']}/serve 2>/dev/null || true").strip()


def test_an_existing_pods_container_gets_the_tree_and_keeps_running(case):
    """data_transfer_pod_target_pod: no pod is started; the pull runs in that pod's container (exec
    through the API server and the node's kubelet) into the directory where it mounts the claim, is
    verified the same way, and the pod is left running; the server is stopped. A rerun pulls
    nothing."""
    holder = f"{case['name']}-app"
    apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": holder, "namespace": "default"},
            "spec": {
                "nodeSelector": {"strata.io/real-node": "true"},
                "tolerations": [{"key": "strata.io/real-node", "operator": "Exists"}],
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": case["name"]}}],
                "containers": [
                    {
                        "name": "app",
                        "image": IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
            },
        }
    )
    target = {
        "data_transfer_pod_claim": "",
        "data_transfer_pod_image": "",
        "data_transfer_pod_target_pod": holder,
        "data_transfer_pod_target_container": "app",
        "data_transfer_pod_target_path": "/data/dataset",
    }
    try:
        wait_pod("default", holder, "{.status.phase}", "Running", timeout=120)
        rc, tasks, out = pull(case, **target)
        assert rc == 0, tasks["Fail when the pull in the existing pod failed"].get("msg") or out[-3000:]
        assert tasks["Start the pod that pulls the tree into the claim"].get("skipped") is True
        assert "identical" in tasks["Summary"]["msg"], tasks["Summary"]["msg"]
        source = snapshot_source(case["source"])
        assert snapshot_here(os.path.join(case["target"], "dataset")) == source
        assert kubectl("-n", "default", "get", "pod", holder, "-o", "jsonpath={.status.phase}") == "Running"
        assert not lab("ss", "-Hltn", f"sport = :{served_port(tasks)}").strip()
        first = len(fetched(case))

        rc, tasks, out = pull(case, **target)
        assert rc == 0, out[-3000:]
        assert len(fetched(case)) == first  # complete files are not pulled again
    finally:
        kubectl("delete", "pod", holder, "-n", "default", "--ignore-not-found", "--wait=true", check=False)


def test_a_pull_in_a_missing_pod_fails_naming_it_not_the_token(case):
    """A pod that does not exist: the play fails naming the pod and what the API said, never the
    served URL's token; the server is stopped."""
    rc, tasks, _out = pull(
        case, data_transfer_pod_target_pod="strata-no-such-pod", data_transfer_pod_target_path="/data"
    )
    assert rc != 0
    failed = tasks["Fail when the pull in the existing pod failed"]
    assert "default/strata-no-such-pod" in failed["msg"], failed
    url = next(r["url"] for name, r in tasks.items() if name.startswith("Serve the tree") and r.get("url"))
    assert url.rsplit("/", 1)[1] not in failed["msg"], failed["msg"]
    assert not lab("ss", "-Hltn", f"sport = :{served_port(tasks)}").strip()
