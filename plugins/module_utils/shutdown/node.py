# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""state=node_restarted: no restart while a pod that matters is bound to the node; the restart
of the node container through Docker; the wait until the kubelet is back."""

import time

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils.k8s import K8sError, K8sTimeout, node_is_ready
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    controller_ref,
    meta_of,
    parse_time,
    workload_ref,
)
from ansible_collections.strata.ops.plugins.module_utils.shutdown import (
    DEFAULT_DOCKER_HOST,
    NodeContainerError,
    RestartRefused,
    ShutdownError,
)
from ansible_collections.strata.ops.plugins.module_utils.shutdown.pods import describe_pods, pod_brief

# kubelet marks the API object of a static pod with this annotation (kubectl drain skips them).
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"

NODE_LEASE_NAMESPACE = "kube-node-lease"


def restart_exempt(pod):
    """Why a pod bound to a node may go down with it (None when it matters), by kubectl drain's
    rules (k8s.io/kubectl/pkg/drain/filters.go): a DaemonSet's pod is recreated on the node by its
    controller, a mirror pod is the node's own static pod, and a finished pod runs nothing."""
    if (controller_ref(pod) or {}).get("kind") == "DaemonSet":
        return "DaemonSet pod"
    if MIRROR_POD_ANNOTATION in (meta_of(pod).get("annotations") or {}):
        return "static pod"
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return "finished, " + phase
    return None


def owner_text(pod):
    """'ReplicaSet ns/web-5d8f7' (the pod's controller) or 'no controller'."""
    ref = controller_ref(pod)
    if not ref:
        return "no controller"
    return workload_ref(ref.get("kind"), ref.get("name"), meta_of(pod).get("namespace"))


def restart_blockers(pods, node, protected=(), restartable=()):
    """(blockers, going): the pods bound to ``node`` (spec.nodeName, not labels) split into those
    that refuse its restart and those that may go down with it; each brief names its
    ``workload`` and ``why``.

    A pod of a ``protected`` workload always blocks. Any other pod blocks too unless a
    ``restartable`` entry (an Ownership or PodRef) covers it or ``restart_exempt`` lets it go:
    nothing that matters runs on the node during a restart unless the operator named it."""
    blockers, going = [], []
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") != node:
            continue
        guard = next((own for own in protected if own.owns(pod)), None)
        allowed = next((own for own in restartable if own.owns(pod)), None)
        exempt = restart_exempt(pod)
        if guard is not None:
            owner, why, target = guard, "protected", blockers
        elif allowed is not None:
            owner, why, target = allowed, "restartable", going
        elif exempt:
            owner, why, target = owner_text(pod), exempt, going
        else:
            owner, why, target = owner_text(pod), "not restartable", blockers
        brief = pod_brief(pod)
        brief.update(workload=str(owner), why=why)
        target.append(brief)
    return blockers, going


def docker_socket_path(docker_host):
    """The unix socket path of a docker_host value (unix:///path or /path)."""
    value = (docker_host or DEFAULT_DOCKER_HOST).strip()
    if value.startswith("unix://"):
        value = value[len("unix://") :]
    if value.startswith("/"):
        return value
    raise ShutdownError(
        f"docker_host {docker_host!r} is not supported: "
        "only the local Docker socket (unix:///var/run/docker.sock or another unix:// path) is; "
        "run the task on the host of the kind node container",
        docker_host=docker_host,
    )


def lease_renewed_since(since):
    """Predicate over Lease items: the node's Lease was renewed at or after ``since`` (an aware
    datetime), i.e. the kubelet is back after the restart."""

    def predicate(items):
        for lease in items:
            renewed = parse_time((lease.get("spec") or {}).get("renewTime"))
            if renewed is not None and renewed >= since:
                return True
        return False

    predicate.__doc__ = f"a Lease renewal after {since.isoformat()}"
    return predicate


class NodeRestarts:
    """state=node_restarted, for SafeShutdown (which provides the client, params, clock and the
    docker API): refuse while a pod that matters is bound to the node, restart the node's
    container through Docker, wait until the node is Ready again."""

    def node_restarted(self):
        p = self.p
        node = p["node"]
        container = p.get("node_container") or node
        self.client.get_node(node)  # an unknown node fails here, listing the nodes there are
        protected = self.named_owners(p.get("protected"))
        restartable = self.named_owners(p.get("restartable"))
        on_node, _rv = self.client.list("Pod", None, field_selector="spec.nodeName=" + node)
        blockers, going = restart_blockers(on_node, node, protected, restartable)
        docker = self.docker or ctr.DockerAPI(docker_socket_path(p.get("docker_host")))
        doc = self._inspect_node_container(docker, container, node)
        started_before = (doc.get("State") or {}).get("StartedAt")
        result = {
            "changed": False,
            "state": "node_restarted",
            "node": node,
            "node_container": container,
            "protected": [str(o) for o in protected],
            "restartable": [str(o) for o in restartable],
            "pods_on_node": [pod_brief(x) for x in on_node],
            "blockers": blockers,
            "going_down": going,
            "forced": bool(blockers) and bool(p.get("force")),
            "started_at_before": started_before,
            "started_at_after": None,
            "diff": {
                "before": {"node_container": container, "started_at": started_before},
                "after": {"node_container": container, "started_at": "(restarted)"},
            },
        }
        if blockers and not p.get("force"):
            blocking = describe_pods(blockers)
            raise RestartRefused(
                f"refusing to restart node container {container} (node {node}): "
                f"pods that matter are bound to it: {blocking}. "
                "Stop their workloads first (strata.ops.safe_shutdown state=stopped, or playbooks/stop.yml) "
                "and run this again; name in restartable the workloads or pods that may go down with the "
                "node (DaemonSet pods, static pods and finished pods never block); or set force: true to "
                "restart anyway and break them. Nothing was restarted.",
                **result,
            )
        if blockers:
            blocking = describe_pods(blockers)
            self.warnings.append(
                f"force: restarting node container {container} breaks these running pods: {blocking}"
            )
        going_text = describe_pods(going)
        if self.check_mode:
            result["changed"] = True
            breaks = (
                f" and BREAK these running pods (force): {describe_pods(blockers)}"
                if blockers
                else "; no pod that matters is on it"
            )
            going_down = "; going down with it: " + going_text if going else ""
            result["msg"] = (
                f"check mode: would restart node container {container} (node {node}){breaks}{going_down}"
            )
            return result
        deadline = self.clock() + p["timeout"]
        started_after = self._restart_node_container(docker, container, started_before, deadline, result)
        result["started_at_after"] = started_after
        result["diff"]["after"]["started_at"] = started_after
        if p.get("wait_node_ready", True):
            self._wait_node_back(node, container, started_after, deadline, result)
        ready = " and the node is Ready again" if p.get("wait_node_ready", True) else ""
        broke = f"; forced, broke: {describe_pods(blockers)}" if blockers else ""
        went_down = "; went down with it: " + going_text if going else ""
        result["msg"] = f"node container {container} (node {node}) restarted{ready}{broke}{went_down}"
        return result

    def _inspect_node_container(self, docker, container, node):
        """Docker's inspect document of the node's container; NodeContainerError when there is none."""
        try:
            return docker.inspect(container)
        except ctr.TargetNotFound:
            docker_host = self.p.get("docker_host") or DEFAULT_DOCKER_HOST
            raise NodeContainerError(
                f"no Docker container {container!r} at {docker_host} to restart for node {node}: set "
                "node_container to the kind node's container (docker ps; kind names it "
                "<cluster>-control-plane)",
                node=node,
                node_container=container,
            ) from None
        except ctr.ContainerError as exc:
            raise NodeContainerError(str(exc), node=node, node_container=container) from None

    def _restart_node_container(self, docker, container, started_before, deadline, result):
        """Restart the node's container and wait until it runs again; its new StartedAt."""
        try:
            docker.restart(container, self.p.get("node_stop_timeout") or 30)
            result["changed"] = True
            doc = docker.inspect(container)
            while not (
                (doc.get("State") or {}).get("Running")
                and (doc.get("State") or {}).get("StartedAt") != started_before
            ):
                if self.clock() > deadline:
                    status = (doc.get("State") or {}).get("Status")
                    raise NodeContainerError(
                        f"node container {container} was restarted but is not running again after "
                        f"{self.p['timeout']} s (state {status}): see docker logs {container}",
                        **result,
                    )
                time.sleep(0.2)
                doc = docker.inspect(container)
        except ctr.ContainerError as exc:
            raise NodeContainerError(
                f"restarting node container {container} failed: {exc}", **result
            ) from None
        return doc["State"]["StartedAt"]

    def _wait_node_back(self, node, container, started_after, deadline, result):
        """Wait until the node's kubelet renewed its Lease after the restart (when the cluster
        has node Leases) and the Node is Ready."""
        since = parse_time(started_after)
        try:
            leases, _rv = self.client.list(
                "Lease", NODE_LEASE_NAMESPACE, field_selector="metadata.name=" + node
            )
            if leases and since is not None:
                self.client.watch_until(
                    "Lease",
                    lease_renewed_since(since),
                    NODE_LEASE_NAMESPACE,
                    field_selector="metadata.name=" + node,
                    timeout=self.remaining(deadline),
                    description=f"node {node}'s Lease to be renewed after the restart",
                )
            self.client.watch_until(
                "Node",
                lambda items: bool(items) and node_is_ready(items[0]),
                field_selector="metadata.name=" + node,
                timeout=self.remaining(deadline),
                description=f"node {node} to be Ready",
            )
        except K8sTimeout as exc:
            raise K8sTimeout(
                f"node container {container} was restarted (StartedAt {started_after}) but node {node} did "
                f"not report back within {self.p['timeout']} s ({exc.details.get('waited_for')}): check the "
                f"kubelet inside it (docker exec {container} journalctl -u kubelet)",
                **result,
            ) from None
        except K8sError as exc:
            raise type(exc)(
                f"{exc} (node container {container} was restarted; "
                f"waiting for node {node} to be Ready again)",
                **result,
            ) from None
