"""A pod on the test bed's containerd CRI (tests/testbed/cri/start), made as the kubelet makes one:
a sandbox, then one container labelled with the pod. Used by the pod checkpoint tests and by
bench/bench_restore.py.
"""

import contextlib
import json
import os
import subprocess
import uuid

from testbed_paths import BIN

# needs .collections on sys.path, as lab_k8s.py (tests/conftest.py, bench/benchkit.py put it there)
from ansible_collections.strata.ops.plugins.module_utils.containers import crictl_argv

CRI_ENDPOINT = "unix:///run/strata-cri/containerd.sock"
CRICTL = os.path.join(BIN, "crictl")
# CRI namespace modes (k8s.io/cri-api NamespaceMode): POD 0, CONTAINER 1, NODE 2
POD, CONTAINER, NODE = 0, 1, 2


def crictl(*args, check=True):
    # the module's own crictl timeout: a sandbox takes longer than crictl's 2 s on a busy machine
    argv = [*crictl_argv(CRICTL, CRI_ENDPOINT), "--image-endpoint", CRI_ENDPOINT, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"crictl {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def missing():
    """Why the CRI runtime cannot run a pod here (None when it can)."""
    if not os.access(CRICTL, os.X_OK):
        return f"no crictl at {CRICTL} (tests/testbed/cri/start builds it)"
    if not crictl("images", "-o", "json", check=False):
        return f"the CRI runtime does not answer on {CRI_ENDPOINT} (tests/testbed/cri/start)"
    if not workload_image():
        return "the CRI workload image is not loaded (tests/testbed/cri/start)"
    return None


def workload_image():
    """The tag of the test bed's workload image (tests/testbed/cri/workload), or None."""
    images = json.loads(crictl("images", "-o", "json"))["images"]
    tags = [t for i in images for t in i.get("repoTags") or [] if "/strata-cri-workload:" in t]
    return tags[0] if tags else None


def kubelet_labels(pod, namespace, container):
    return {
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.container.name": container,
    }


@contextlib.contextmanager
def running_pod(workdir, pod, namespace, container, command, *, host_network=False):
    """A pod ``namespace/pod`` whose container ``container`` runs ``command`` of the workload image,
    a PID namespace per container (the kubelet's default), the pod's own network namespace (the
    test bed's CNI bridge) or the host's. Yields {"sandbox", "id", "log"}; the pod is removed
    at the end."""
    namespaces = {"network": NODE if host_network else POD, "pid": CONTAINER, "ipc": POD}
    security = {"security_context": {"namespace_options": namespaces}}
    pod_config = os.path.join(workdir, f"{pod}-pod.json")
    with open(pod_config, "w") as handle:
        meta = {"name": pod, "namespace": namespace, "uid": uuid.uuid4().hex, "attempt": 0}
        labels = {"io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": namespace}
        logs = os.path.join(workdir, f"{pod}-logs")
        json.dump({"metadata": meta, "labels": labels, "log_directory": logs, "linux": security}, handle)
    container_config = os.path.join(workdir, f"{pod}-{container}.json")
    with open(container_config, "w") as handle:
        config = {
            "metadata": {"name": container},
            "image": {"image": workload_image()},
            "command": ["/workload", *command],
            "labels": kubelet_labels(pod, namespace, container),
            "log_path": container + ".log",
            "linux": security,
        }
        json.dump(config, handle)
    sandbox = crictl("runp", pod_config)
    try:
        cid = crictl("create", sandbox, container_config, pod_config)
        crictl("start", cid)
        yield {"sandbox": sandbox, "id": cid, "log": os.path.join(logs, container + ".log")}
    finally:
        crictl("rmp", "--force", sandbox, check=False)
