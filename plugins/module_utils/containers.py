# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find a container's process and (re)create containers, for strata.ops.pod_checkpoint.

Docker is spoken to through its HTTP API on the unix socket with the standard library only
(``http.client`` over ``AF_UNIX``): the Docker SDK for Python may not be installed on managed
hosts, and the ``docker`` CLI is not needed. CRI runtimes (containerd, CRI-O) are reached
through ``crictl`` when it is installed.

Helpers raise ``ContainerError`` (or a subclass); a module's ``main()`` catches it once.
"""

import json
import socket
from http.client import HTTPConnection
from urllib.parse import quote, urlencode

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
API_VERSION = "v1.41"  # Docker 20.10; newer engines accept it
LABEL_POD = "io.kubernetes.pod.name"
LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER = "io.kubernetes.container.name"
CRICTL_TIMEOUT = "60s"


class ContainerError(StrataError):
    """Base of the container runtime errors."""


class RuntimeUnavailable(ContainerError):
    pass


class TargetNotFound(ContainerError):
    pass


class ContainerConflict(ContainerError):
    pass


class CtrClient:
    """containerd's ``ctr`` (or ``k3s ctr``) against one socket and namespace; every command it
    ran is in ``commands``. ``run`` returns (rc, out, err); a failure raises ``failure(...)``."""

    def __init__(self, command, address, namespace, run_command):
        self.address = address
        self.argv = [*command, "--address", address, "--namespace", namespace]
        self.run_command = run_command
        self.commands = []

    def run(self, *args, check=True):
        argv = [*self.argv, *args]
        self.commands.append(" ".join(argv))
        rc, out, err = self.run_command(argv)
        if check and rc != 0:
            raise self.failure(args, rc, (err or out).strip(), argv)
        return rc, out, err

    def failure(self, args, rc, text, argv):  # pylint: disable=unused-argument
        return RuntimeUnavailable(
            f"{' '.join(self.argv[:1] + list(args[:2]))} failed (rc={rc}): {text}. "
            f"Is containerd up, and is {self.address} its socket?"
        )


class _UnixHTTPConnection(HTTPConnection):
    def __init__(self, path, timeout=60):
        HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class DockerAPI:
    """The few Docker Engine API calls pod_checkpoint needs."""

    def __init__(self, socket_path=DEFAULT_DOCKER_SOCKET, timeout=60):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method, path, query=None, body=None, ok=(200, 201, 204, 304), *, timeout=None):
        url = f"/{API_VERSION}{path}"
        if query:
            url += "?" + urlencode(query)
        conn = _UnixHTTPConnection(self.socket_path, self.timeout if timeout is None else timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, url, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, socket.timeout) as exc:
            raise RuntimeUnavailable(
                f"cannot talk to Docker on {self.socket_path}: {exc}. "
                "Is dockerd running, and does this user may use the socket?"
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw.decode("utf-8")) if raw else None
        except ValueError:
            data = raw.decode("utf-8", "replace")
        if response.status not in ok:
            message = data.get("message") if isinstance(data, dict) else data
            error = TargetNotFound if response.status == 404 else ContainerError
            raise error(f"Docker API {method} {path}: HTTP {response.status}: {message}")
        return data

    def info(self):
        return self.request("GET", "/info")

    def inspect(self, ref):
        return self.request("GET", f"/containers/{quote(ref, safe='')}/json")

    def list(self, labels=None, all_containers=True):
        query = {"all": "1" if all_containers else "0"}
        if labels:
            query["filters"] = json.dumps(
                {"label": [f"{key}={value}" for key, value in sorted(labels.items())]}
            )
        return self.request("GET", "/containers/json", query=query)

    def create(self, name, config):
        return self.request("POST", "/containers/create", query={"name": name}, body=config)

    def start(self, ref, checkpoint=None):
        query = {"checkpoint": checkpoint} if checkpoint else None
        return self.request("POST", f"/containers/{quote(ref, safe='')}/start", query=query)

    def restart(self, ref, stop_timeout=10):
        """docker restart: stop (the container's stop signal, SIGKILL after ``stop_timeout``
        seconds), then start. Returns when Docker has started it again."""
        return self.request(
            "POST",
            f"/containers/{quote(ref, safe='')}/restart",
            query={"t": str(int(stop_timeout))},
            timeout=self.timeout + stop_timeout,
        )

    def remove(self, ref, force=True):
        return self.request(
            "DELETE", f"/containers/{quote(ref, safe='')}", query={"force": "1" if force else "0"}
        )


def find_docker_container(api, pod=None, namespace=None, container=None):
    """Inspect document of the target: by kubelet labels when ``pod`` is given, else by the
    plain container name or id in ``container``."""
    if pod:
        labels = {LABEL_POD: pod, LABEL_NAMESPACE: namespace or "default"}
        if container:
            labels[LABEL_CONTAINER] = container
        found = api.list(labels=labels, all_containers=False) or []
        # kubelet also runs a pause ("POD") container per pod; it never holds the workload.
        found = [c for c in found if c.get("Labels", {}).get(LABEL_CONTAINER, "POD") != "POD"]
        if not found:
            carried = ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
            raise TargetNotFound(
                f"no running Docker container carries {carried}: check pod/namespace/container "
                f"(kubectl get pod {pod} -n {namespace or 'default'})"
            )
        if len(found) > 1:
            names = sorted(c.get("Labels", {}).get(LABEL_CONTAINER, "?") for c in found)
            raise TargetNotFound(
                f"pod {namespace or 'default'}/{pod} has several containers ({', '.join(names)}): "
                "set container to one of them"
            )
        ref = found[0]["Id"]
    else:
        ref = container
    try:
        doc = api.inspect(ref)
    except TargetNotFound:
        raise TargetNotFound(
            f"no Docker container named or with id {ref!r} (docker ps -a lists them)"
        ) from None
    state = doc.get("State", {})
    if not state.get("Running") or not state.get("Pid"):
        name = doc.get("Name", ref).lstrip("/")
        raise TargetNotFound(
            f"container {name} is {state.get('Status', 'stopped')}, not running: only a running container "
            "can be checkpointed"
        )
    return doc


def docker_target(doc):
    """The manifest's view of a Docker container."""
    config = doc.get("Config", {})
    return {
        "runtime": "docker",
        "container_id": doc["Id"],
        "container_name": doc.get("Name", "").lstrip("/"),
        "image": config.get("Image"),
        "image_id": doc.get("Image"),
        "pid": doc["State"]["Pid"],
        "labels": config.get("Labels") or {},
        "sandbox_key": doc.get("NetworkSettings", {}).get("SandboxKey"),
        "network_mode": doc.get("HostConfig", {}).get("NetworkMode"),
        "create": restore_config(doc),
        # what the container was created with (volumes, binds, tmpfs), not what reached it later
        "mount_points": sorted(m["Destination"] for m in doc.get("Mounts") or [] if m.get("Destination")),
    }


# HostConfig keys carried over to the container a checkpoint is restored into. Ports are left
# out: with --leave-running the original still holds them.
_HOST_CONFIG_KEYS = (
    "Binds",
    "Tmpfs",
    "CapAdd",
    "CapDrop",
    "SecurityOpt",
    "Devices",
    "ShmSize",
    "CgroupnsMode",
    "IpcMode",
    "Init",
    "ReadonlyRootfs",
    "Privileged",
    "Mounts",
    "DeviceRequests",  # docker run --gpus: a GPU dump restores only where the GPU is
    "Runtime",  # the nvidia runtime, where GPUs are given that way
)


def restore_config(doc):
    """A /containers/create body reproducing what a restore needs of the original: the same
    image (by id), command, environment and mounts (CRIU re-binds external mounts by their
    mount point, so every bind mount of the original must exist in the new container)."""
    config = doc.get("Config", {})
    host = doc.get("HostConfig", {})
    body = {
        "Image": doc.get("Image") or config.get("Image"),
        "Cmd": config.get("Cmd"),
        "Entrypoint": config.get("Entrypoint"),
        "Env": config.get("Env"),
        "WorkingDir": config.get("WorkingDir"),
        "User": config.get("User"),
        "Labels": dict((k, v) for k, v in (config.get("Labels") or {}).items()),
        "HostConfig": dict((k, host[k]) for k in _HOST_CONFIG_KEYS if host.get(k) not in (None, "", [], {})),
    }
    network_mode = host.get("NetworkMode")
    if network_mode and not network_mode.startswith("container:"):
        body["HostConfig"]["NetworkMode"] = network_mode
    return body


def bind_sources(create):
    """Host paths a /containers/create body binds (Binds entries "SRC:DST[:OPTS]" and bind Mounts)."""
    host = create.get("HostConfig") or {}
    sources = [b.split(":", 1)[0] for b in host.get("Binds") or []]
    sources += [m.get("Source") for m in host.get("Mounts") or [] if m.get("Type") == "bind"]
    return [s for s in sources if s and s.startswith("/")]  # named volumes are not paths


def replace_bind_source(create, old, new):
    """Bind ``new`` wherever ``create`` binds ``old``."""
    host = create.get("HostConfig") or {}
    if host.get("Binds"):
        host["Binds"] = [new + b[len(old) :] if b.split(":", 1)[0] == old else b for b in host["Binds"]]
    for mount in host.get("Mounts") or []:
        if mount.get("Type") == "bind" and mount.get("Source") == old:
            mount["Source"] = new


def crictl_argv(crictl, endpoint):
    """crictl's argv prefix: the binary, a timeout, and ``--runtime-endpoint`` when one is given.

    crictl bounds every call by --timeout, 2 s unless given (cri-tools cmd/crictl/main.go): a
    loaded node - the one whose job is being checkpointed - can take longer. The kubelet gives
    its runtime 2 min (--runtime-request-timeout)."""
    return [crictl, "--timeout", CRICTL_TIMEOUT] + (["--runtime-endpoint", endpoint] if endpoint else [])


def crictl_target(run_command, crictl, pod, namespace, container):
    """Container id, pid and image of a CRI container through crictl (``crictl``: its argv
    prefix, the binary and any --runtime-endpoint)."""
    argv = [*crictl, "ps", "-o", "json", "--label", f"{LABEL_POD}={pod}"]
    argv += ["--label", f"{LABEL_NAMESPACE}={namespace or 'default'}"]
    if container:
        argv += ["--name", f"^{container}$"]
    rc, out, err = run_command(argv)
    if rc != 0:
        raise RuntimeUnavailable(
            f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}. Is the CRI runtime up, and is this "
            "its endpoint? Set cri_endpoint (crictl --runtime-endpoint) to the runtime's socket"
        )
    containers = (json.loads(out or "{}").get("containers")) or []
    if not containers:
        named = f" named {container}" if container else ""
        raise TargetNotFound(
            f"crictl finds no running container of pod {namespace or 'default'}/{pod}{named}"
        )
    if len(containers) > 1:
        names = sorted(c.get("metadata", {}).get("name", "?") for c in containers)
        raise TargetNotFound(f"pod {namespace}/{pod} has several containers ({names}): set container")
    cid = containers[0]["id"]
    rc, out, err = run_command([*crictl, "inspect", "-o", "json", cid])
    if rc != 0:
        raise RuntimeUnavailable(f"crictl inspect {cid} failed: {(err or out).strip()}")
    doc = json.loads(out)
    pid = (doc.get("info") or {}).get("pid")
    if not pid:
        raise TargetNotFound(f"crictl inspect {cid} reports no pid: is the container running?")
    return {
        "runtime": "cri",
        "container_id": cid,
        "container_name": containers[0].get("metadata", {}).get("name"),
        "image": (containers[0].get("image") or {}).get("image"),
        "image_id": containers[0].get("imageRef"),
        "pid": int(pid),
        "labels": containers[0].get("labels") or {},
    }
