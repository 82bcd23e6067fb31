# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data-miner pipeline's Kubernetes objects, rendered from its cluster_config.yaml (checked and
with its references resolved by cluster_config.check) and the merged application config.

Pure and deterministic: the same input gives the same objects in the same order (namespaces, then
configuration, services and workloads, each sorted by namespace and name), so a rendered file is
byte-identical across runs and a second apply changes nothing.

Placement comes from the config alone, never from labels someone may have changed: every pod gets a
required node affinity on ``kubernetes.io/hostname`` (the node names of cluster.nodes, which k3s
registers as the hostname label) listing the nodes its ``schedule_on`` allows (``all``: every node
but storage-only ones, spread one by one with a topology spread constraint; ``master``; ``gpu``: the
GPU nodes). Infrastructure runs on the master, its data in hostPath ``storage.db_path/NAME``.
SeaweedFS: a master and a filer on the master, one volume server per node holding that node's disk
limit, and a mount DaemonSet on the nodes that take workers. The HF token is a Secret whose value is
given at apply time (``hf_token``); ``render`` without it leaves the Secret out, so nothing rendered
to a file ever holds it.
"""

import json
import math
import re

from ansible_collections.strata.ops.plugins.module_utils.cluster_config import GPU_LABELS, gpu_sharing
from ansible_collections.strata.ops.plugins.module_utils.cluster_config import nodes as config_nodes

PART_OF = "data-miner"
MANAGED_BY = "strata.ops"
CONFIG_MAP = "data-miner-config"
CONFIG_PATH = "/etc/data-miner"
HF_SECRET = "hf-token"
HF_KEY = "HF_TOKEN"
HOSTNAME = "kubernetes.io/hostname"
GPU_LABEL = GPU_LABELS[0]
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
GPU_RUNTIME_CLASS = "nvidia"  # the RuntimeClass layer 3 makes (roles/cluster nvidia-device-plugin.yaml.j2)
# SeaweedFS's volume size limit (master -volumeSizeLimitMB): a node's disk limit is a number of such
# volumes (volume -max; 0 lets the volume server use the free disk, which is what 0 = unlimited means).
SEAWEEDFS_VOLUME_MB = 1000
SEAWEEDFS_PORTS = {"master": [9333, 19333], "filer": [8888, 18888], "volume": [8080, 18080]}
# Where the images of the operators' infrastructure keep their data, and the port they listen on:
# the images' own documentation (postgres PGDATA, grafana paths.data, loki's -config.file default,
# adminer's php server). Any other image keeps its data in /data and needs port when it has node_port.
KNOWN_IMAGES = {
    "postgres": {"data": "/var/lib/postgresql/data", "port": 5432},
    "grafana": {"data": "/var/lib/grafana", "port": 3000},
    "loki": {"data": "/loki", "port": 3100},
    "adminer": {"data": None, "port": 8080},
}
GRAFANA_DATASOURCES = "grafana-datasources"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning/datasources"  # grafana's paths.provisioning default
KIND_ORDER = ["Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "DaemonSet"]


class RenderError(ValueError):
    """A config that passed the schema but cannot be rendered; the message names the path."""


def object_name(text):
    """A DNS-1123 label from a node name (which may hold dots or capitals)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63]


def labels(name, component):
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(name):
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def meta(name, namespace, component):
    out = {"name": name, "labels": labels(name, component)}
    if namespace:
        out["namespace"] = namespace
    return out


def on_nodes(names, key=HOSTNAME):
    """A required node affinity: only the nodes whose ``key`` label is one of ``names``."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": key, "operator": "In", "values": sorted(names)}]}
                ]
            }
        }
    }


def resources_of(preset):
    """A preset's REQUEST-LIMIT ranges as requests and limits (cluster_config's _range checked them)."""
    out = {"requests": {}, "limits": {}}
    for key in ("cpu", "memory"):
        request, limit = split_range(preset[key])
        out["requests"][key] = request
        out["limits"][key] = limit
    return out


def liveness_probe(probe):
    """A worker's stated probe (cluster_config checked it: one of exec, http, tcp) as Kubernetes'."""
    if "exec" in probe:
        out = {"exec": {"command": list(probe["exec"])}}
    elif "http" in probe:
        out = {"httpGet": {"path": probe["http"]["path"], "port": probe["http"]["port"]}}
    else:
        out = {"tcpSocket": {"port": probe["tcp"]["port"]}}
    for key, field in (
        ("initial_delay_seconds", "initialDelaySeconds"),
        ("period_seconds", "periodSeconds"),
        ("failure_threshold", "failureThreshold"),
    ):
        if key in probe:
            out[field] = probe[key]
    return out


def split_range(value):
    """'250m-1000m' -> ('250m', '1000m'); a '-' after e/E belongs to an exponent."""
    for index, char in enumerate(value):
        if char == "-" and index and value[index - 1] not in "eE":
            return value[:index], value[index + 1 :]
    raise RenderError(f"{value!r} is not REQUEST-LIMIT")


class Renderer:
    def __init__(self, doc, app_config=None, hf_token=None):
        self.doc = doc
        self.app_config = app_config
        self.hf_token = hf_token
        self.namespace = doc["cluster"]["namespace"]
        self.nodes = config_nodes(doc)
        self.master = next(n["name"] for n in self.nodes if n["role"] == "master")
        self.gpu_mode = gpu_sharing(doc)[0]
        self.objects = []

    # -- placement
    def nodes_for(self, schedule_on):
        takers = [n for n in self.nodes if not n["storage_only"]]
        if schedule_on == "master":
            return [self.master]
        if schedule_on == "gpu":
            return [n["name"] for n in takers if n["gpu"]]
        return [n["name"] for n in takers]

    def pod_placement(self, name, schedule_on):
        allowed = self.nodes_for(schedule_on)
        # No GPU node in the config (the inventory warns): the pods wait, Pending, for a node
        # labelled as one, instead of running where there is no GPU.
        spec = {"affinity": on_nodes(allowed) if allowed else on_nodes(["true"], key=GPU_LABEL)}
        if schedule_on == "all":
            spec["topologySpreadConstraints"] = [
                {
                    "maxSkew": 1,
                    "topologyKey": HOSTNAME,
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": selector(name)},
                }
            ]
        return spec

    def preset(self, name, path):
        if not name:
            return None
        presets = self.doc.get("resource_presets") or {}
        if name not in presets:
            raise RenderError(f"{path}.resources: {name!r} is not a preset of resource_presets")
        return resources_of(presets[name])

    # -- objects
    def add(self, obj):
        self.objects.append(obj)

    def workload(self, kind, name, namespace, component, pod_spec, replicas, service_ports=()):  # noqa: PLR0917
        """A Deployment, StatefulSet (with its headless Service, serving ``service_ports``) or DaemonSet."""
        spec = {
            "selector": {"matchLabels": selector(name)},
            "template": {"metadata": {"labels": labels(name, component)}, "spec": pod_spec},
        }
        if kind != "DaemonSet":
            spec["replicas"] = replicas
        if kind == "StatefulSet":
            spec["serviceName"] = name
            self.add(self.service(name, namespace, component, ports=list(service_ports), headless=True))
        self.add(
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": meta(name, namespace, component),
                "spec": spec,
            }
        )

    def service(self, name, namespace, component, ports, headless=False, node_port=False, target=None):  # noqa: PLR0917
        spec = {"selector": selector(target or name), "ports": ports}
        if headless:
            spec["clusterIP"] = "None"
        if node_port:
            spec["type"] = "NodePort"
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name, namespace, component),
            "spec": spec,
        }

    def render(self):
        ns = self.namespace
        self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, "namespace")})
        if self.app_config is not None:
            import yaml  # noqa: PLC0415 - the controller's PyYAML, only when a ConfigMap is made

            text = yaml.safe_dump(self.app_config, sort_keys=True, default_flow_style=False)
            self.add(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": meta(CONFIG_MAP, ns, "config"),
                    "data": {"config.yaml": text},
                }
            )
        workers = self.doc.get("workers") or {}
        if self.hf_token and any((w or {}).get("hf_token") for w in workers.values()):
            self.add(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": meta(HF_SECRET, ns, "secret"),
                    "type": "Opaque",
                    "stringData": {HF_KEY: self.hf_token},
                }
            )
        for name, worker in workers.items():
            self.worker(name, worker or {})
        for name, entry in (self.doc.get("infrastructure") or {}).items():
            self.infrastructure(name, entry)
        self.grafana_datasources()
        if self.doc.get("seaweedfs") is not None or (self.doc.get("storage") or {}).get("seaweedfs_mount"):
            self.seaweedfs()
        return sorted(self.objects, key=_order)

    def worker(self, name, worker):
        path = f"workers.{name}"
        image = self.doc.get("image") or {}
        container = {
            "name": name,
            "image": f"{image.get('name', 'data-miner')}:{image.get('tag', 'latest')}",
            "imagePullPolicy": image.get("pull_policy", "IfNotPresent"),
            "env": [{"name": "DATA_MINER_WORKER", "value": name}],
            "volumeMounts": [],
        }
        volumes = []
        if self.app_config is not None:
            container["volumeMounts"].append({"name": "config", "mountPath": CONFIG_PATH, "readOnly": True})
            volumes.append({"name": "config", "configMap": {"name": CONFIG_MAP}})
        if worker.get("hf_token"):
            # Only these workers see the token; from the Secret, never from the ConfigMap.
            container["env"].append(
                {"name": HF_KEY, "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": HF_KEY}}}
            )
        mount = (self.doc.get("storage") or {}).get("seaweedfs_mount")
        if mount:
            # The SeaweedFS FUSE mount appears on the host after the pod may have started.
            container["volumeMounts"].append(
                {"name": "shared", "mountPath": mount, "mountPropagation": "HostToContainer"}
            )
            volumes.append({"name": "shared", "hostPath": {"path": mount, "type": "DirectoryOrCreate"}})
        if worker.get("probe"):
            container["livenessProbe"] = liveness_probe(worker["probe"])
        resources = self.preset(worker.get("resources"), path)
        pod = dict(self.pod_placement(name, worker.get("schedule_on", "all")), containers=[container])
        if worker.get("schedule_on") == "gpu" and self.gpu_mode != "runtime":
            # A GPU (or a time slice of one) from the device plugin, through the nvidia runtime; in
            # mode runtime nvidia is the default runtime and no pod asks (the operators' setup).
            resources = resources or {}
            resources["limits"] = dict(resources.get("limits", {}), **{GPU_RESOURCE: 1})
            pod["runtimeClassName"] = GPU_RUNTIME_CLASS
        if resources:
            container["resources"] = resources
        if volumes:
            pod["volumes"] = volumes
        self.workload(
            worker.get("kind", "Deployment"), name, self.namespace, "worker", pod, worker.get("replicas", 1)
        )

    def infrastructure(self, name, entry):
        path = f"infrastructure.{name}"
        known = KNOWN_IMAGES.get(_image_base(entry["image"]), {})
        port = entry.get("port", known.get("port"))
        if entry.get("node_port") is not None and port is None:
            raise RenderError(f"{path}.node_port: set port too (the port {entry['image']} listens on)")
        container = {"name": name, "image": entry["image"]}
        pod = {"affinity": on_nodes([self.master])}
        data_dir = known.get("data", "/data")
        db_path = (self.doc.get("storage") or {}).get("db_path")
        if data_dir and db_path:
            container["volumeMounts"] = [{"name": "data", "mountPath": data_dir}]
            pod["volumes"] = [
                {
                    "name": "data",
                    "hostPath": {"path": f"{db_path.rstrip('/')}/{name}", "type": "DirectoryOrCreate"},
                }
            ]
        if port is not None:
            container["ports"] = [{"name": "main", "containerPort": port}]
        resources = self.preset(entry.get("resources"), path)
        if resources:
            container["resources"] = resources
        pod["containers"] = [container]
        kind = entry.get("kind", "Deployment")
        ports = [] if port is None else [{"name": "main", "port": port, "targetPort": port}]
        self.workload(kind, name, self.namespace, "infrastructure", pod, entry.get("replicas", 1), ports)
        node_port = entry.get("node_port")
        if kind == "StatefulSet" and node_port is not None:
            ports = [dict(ports[0], nodePort=node_port)]
            self.add(
                self.service(
                    f"{name}-nodeport", self.namespace, "infrastructure", ports, node_port=True, target=name
                )
            )
        elif kind != "StatefulSet" and ports:
            if node_port is not None:
                ports = [dict(ports[0], nodePort=node_port)]
            self.add(
                self.service(name, self.namespace, "infrastructure", ports, node_port=node_port is not None)
            )

    def grafana_datasources(self):
        """Grafana's datasources provisioned from the config (grafana's provisioning/datasources format):
        every Loki of the infrastructure, at its Service's address, so no datasource URL is ever left
        empty (the operators' incident). Mounted into each Grafana at its provisioning directory."""
        infrastructure = self.doc.get("infrastructure") or {}
        grafanas = [name for name, e in infrastructure.items() if _image_base(e["image"]) == "grafana"]
        lokis = [name for name, e in infrastructure.items() if _image_base(e["image"]) == "loki"]
        if not grafanas or not lokis:
            return
        import yaml  # noqa: PLC0415 - the controller's PyYAML

        datasources = []
        for name in lokis:
            port = infrastructure[name].get("port", KNOWN_IMAGES["loki"]["port"])
            url = f"http://{name}.{self.namespace}.svc:{port}"
            datasources.append({"name": name, "type": "loki", "access": "proxy", "url": url})
        text = yaml.safe_dump({"apiVersion": 1, "datasources": datasources}, sort_keys=True)
        self.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(GRAFANA_DATASOURCES, self.namespace, "config"),
                "data": {"datasources.yaml": text},
            }
        )
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "StatefulSet") and obj["metadata"]["name"] in grafanas:
                pod = obj["spec"]["template"]["spec"]
                pod.setdefault("volumes", []).append(
                    {"name": "datasources", "configMap": {"name": GRAFANA_DATASOURCES}}
                )
                pod["containers"][0].setdefault("volumeMounts", []).append(
                    {"name": "datasources", "mountPath": GRAFANA_PROVISIONING, "readOnly": True}
                )

    def seaweedfs(self):
        sw = self.doc.get("seaweedfs") or {}
        ns = sw.get("namespace", "seaweedfs")
        image = sw.get("image", "chrislusf/seaweedfs:latest")
        data_dir = sw.get("data_dir", "/data/seaweed").rstrip("/")
        master = f"seaweedfs-master.{ns}.svc:{SEAWEEDFS_PORTS['master'][0]}"
        self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, "namespace")})

        def server(args, on, data, ports=(), *, privileged=False, extra_mounts=()):
            """A SeaweedFS pod running ``weed ARGS`` on the nodes ``on``, its data in hostPath ``data``."""
            container = {
                "name": "seaweedfs",
                "image": image,
                "args": args,
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, *extra_mounts],
            }
            if ports:
                container["ports"] = [{"containerPort": p} for p in ports]
            if privileged:
                container["securityContext"] = {"privileged": True}
            volumes = [{"name": "data", "hostPath": {"path": data, "type": "DirectoryOrCreate"}}]
            return {"affinity": on_nodes(on), "containers": [container], "volumes": volumes}

        for role, args in (
            ("master", ["master", "-mdir=/data", f"-volumeSizeLimitMB={SEAWEEDFS_VOLUME_MB}"]),
            ("filer", ["filer", f"-master={master}"]),
        ):
            name = f"seaweedfs-{role}"
            pod = server(args, [self.master], f"{data_dir}/{role}", SEAWEEDFS_PORTS[role])
            ports = [{"name": f"p{p}", "port": p, "targetPort": p} for p in SEAWEEDFS_PORTS[role]]
            self.workload("StatefulSet", name, ns, "seaweedfs", pod, 1, ports)
        for node in self.nodes:
            limit = node["disk_limit_mb"] or 0
            volumes = math.ceil(limit / SEAWEEDFS_VOLUME_MB) if limit else 0
            name = f"seaweedfs-volume-{object_name(node['name'])}"
            args = ["volume", f"-mserver={master}", "-dir=/data", f"-max={volumes}", f"-rack={node['name']}"]
            pod = server(args, [node["name"]], f"{data_dir}/volume", SEAWEEDFS_PORTS["volume"])
            self.workload("StatefulSet", name, ns, "seaweedfs", pod, 1)
        mount = (self.doc.get("storage") or {}).get("seaweedfs_mount")
        if mount:
            takers = self.nodes_for("all")
            fuse = {"name": "fuse", "mountPath": "/dev/fuse"}
            shared = {"name": "shared", "mountPath": mount, "mountPropagation": "Bidirectional"}
            args = [
                "mount",
                f"-filer=seaweedfs-filer.{ns}.svc:{SEAWEEDFS_PORTS['filer'][0]}",
                f"-dir={mount}",
                "-dirAutoCreate",
            ]
            pod = server(
                args, takers, f"{data_dir}/mount-cache", privileged=True, extra_mounts=(fuse, shared)
            )
            pod["volumes"] += [
                {"name": "fuse", "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}},
                {"name": "shared", "hostPath": {"path": mount, "type": "DirectoryOrCreate"}},
            ]
            self.workload("DaemonSet", "seaweedfs-mount", ns, "seaweedfs", pod, None)


def placed_on(pod_spec):
    """The node names a pod's required hostname affinity allows (none when it selects by a label)."""
    terms = (
        ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    return [
        value
        for term in terms
        for expression in term.get("matchExpressions", [])
        if expression.get("key") == HOSTNAME
        for value in expression.get("values", [])
    ]


def host_dirs(doc, objects, node, owners):
    """The directories ``node`` must hold before the pods start: every DirectoryOrCreate hostPath of
    the workloads of ``objects`` placed on it (an infrastructure image's data owned by its user from
    ``owners``, by image base name; the rest root's 0755), then SeaweedFS's data_dir and db_path
    themselves where something lies below them. [{path, uid, gid, mode, for}], sorted by path."""
    found = {}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        pod = obj["spec"]["template"]["spec"]
        if node not in placed_on(pod):
            continue
        infrastructure = obj["metadata"]["labels"].get("app.kubernetes.io/component") == "infrastructure"
        owner = owners.get(_image_base(pod["containers"][0]["image"]), {}) if infrastructure else {}
        for volume in pod.get("volumes", []):
            host_path = volume.get("hostPath") or {}
            if host_path.get("type") == "DirectoryOrCreate" and host_path["path"] not in found:
                found[host_path["path"]] = {
                    "path": host_path["path"],
                    "uid": owner.get("uid", 0),
                    "gid": owner.get("gid", 0),
                    "mode": owner.get("mode", "0755"),
                    "for": obj["metadata"]["name"],
                }
    parents = [
        ((doc.get("seaweedfs") or {}).get("data_dir") or "/data/seaweed").rstrip("/"),
        ((doc.get("storage") or {}).get("db_path") or "").rstrip("/"),
    ]
    for parent in parents:
        if parent and parent not in found and any(path.startswith(parent + "/") for path in found):
            found[parent] = {"path": parent, "uid": 0, "gid": 0, "mode": "0755", "for": "parent"}
    return [found[path] for path in sorted(found)]


def _image_base(image):
    """'grafana/grafana:10.0.0' -> 'grafana'; 'postgres:16' -> 'postgres'."""
    last = image.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0]


def _order(obj):
    meta_ = obj["metadata"]
    return (KIND_ORDER.index(obj["kind"]), meta_.get("namespace", ""), meta_["name"])


def plain(value):
    """A copy made of plain dicts, lists and scalars (Ansible hands filters its own tagged types,
    which PyYAML's safe dumper refuses)."""
    return json.loads(json.dumps(value))


def render(doc, app_config=None, hf_token=None):
    """The pipeline's objects for a checked, resolved cluster config (``cluster_config.check(...).doc``)."""
    app = None if app_config is None else plain(app_config)
    return Renderer(plain(doc), app_config=app, hf_token=None if hf_token is None else str(hf_token)).render()
