"""A pod on one of the test bed's containerd CRI runtimes (tests/testbed/cri/start [1.6|1.7]), made
as the kubelet makes one: a sandbox, then one container labelled with the pod. Used by the pod
checkpoint tests and by bench/bench_restore.py.
"""

import contextlib
import json
import os
import subprocess
import uuid

from testbed_paths import BIN, containerd_of

# needs .collections on sys.path, as lab_k8s.py (tests/conftest.py, bench/benchkit.py put it there)
from ansible_collections.strata.ops.plugins.module_utils.containers import crictl_argv

# containerd release -> its CRI endpoint (tests/testbed/cri/start's two; the CRI plugin serves CRI on
# containerd's own socket)
CRI_ENDPOINTS = {release: "unix://" + containerd_of(release).address for release in ("1.6", "1.7")}
CRI_ENDPOINT = CRI_ENDPOINTS["1.6"]
CRICTL = os.path.join(BIN, "crictl")
# CRI namespace modes (k8s.io/cri-api NamespaceMode): POD 0, CONTAINER 1, NODE 2
POD, CONTAINER, NODE = 0, 1, 2


def crictl(*args, check=True, endpoint=CRI_ENDPOINT):
    # the module's own crictl timeout: a sandbox takes longer than crictl's 2 s on a busy machine
    argv = [*crictl_argv(CRICTL, endpoint), "--image-endpoint", endpoint, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"crictl {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def missing(endpoint=CRI_ENDPOINT):
    """Why the CRI runtime on ``endpoint`` cannot run a pod here (None when it can)."""
    release = next(r for r, e in CRI_ENDPOINTS.items() if e == endpoint)
    start = f"tests/testbed/cri/start {release}"
    if not os.access(CRICTL, os.X_OK):
        return f"no crictl at {CRICTL} ({start} builds it)"
    if not crictl("images", "-o", "json", check=False, endpoint=endpoint):
        return f"the CRI runtime does not answer on {endpoint} ({start})"
    if not workload_image(endpoint):
        return f"the CRI workload image is not loaded ({start})"
    return None


def workload_image(endpoint=CRI_ENDPOINT):
    """The tag of the test bed's workload image (tests/testbed/cri/workload), or None."""
    images = json.loads(crictl("images", "-o", "json", endpoint=endpoint))["images"]
    tags = [t for i in images for t in i.get("repoTags") or [] if "/strata-cri-workload:" in t]
    return tags[0] if tags else None


def kubelet_labels(pod, namespace, container):
    return {
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.container.name": container,
    }


@contextlib.contextmanager
def running_pod(
    workdir,
    pod,
    namespace,
    container,
    command,
    *,
    host_network=False,
    endpoint=CRI_ENDPOINT,
    volumes=(),
    working_dir=None,
):
    """A pod ``namespace/pod`` on the CRI runtime at ``endpoint`` whose container ``container`` runs
    ``command`` of the workload image, a PID namespace per container (the kubelet's default), the
    pod's own network namespace (the test bed's CNI bridge) or the host's; ``volumes``: (host path,
    container path) bind mounts, as the kubelet mounts a hostPath volume; ``working_dir``: its cwd.
    Yields {"sandbox", "id", "log"}; the pod is removed at the end."""
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
            "image": {"image": workload_image(endpoint)},
            "command": ["/workload", *command],
            "labels": kubelet_labels(pod, namespace, container),
            "log_path": container + ".log",
            "linux": security,
            "mounts": [{"host_path": host, "container_path": inside} for host, inside in volumes],
        }
        if working_dir:
            config["working_dir"] = working_dir
        json.dump(config, handle)
    sandbox = crictl("runp", pod_config, endpoint=endpoint)
    try:
        cid = crictl("create", sandbox, container_config, pod_config, endpoint=endpoint)
        crictl("start", cid, endpoint=endpoint)
        yield {"sandbox": sandbox, "id": cid, "log": os.path.join(logs, container + ".log")}
    finally:
        crictl("rmp", "--force", sandbox, check=False, endpoint=endpoint)
