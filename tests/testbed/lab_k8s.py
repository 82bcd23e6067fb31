"""Objects tests and benchmarks put into the lab control plane: kwok-simulated nodes and
Deployments (plain dicts, as strata.ops' K8sClient takes them)."""

from ansible_collections.strata.ops.plugins.module_utils import k8s

NODE_RESOURCES = {"cpu": "8", "memory": "32Gi", "pods": "110"}


def create_kwok_node(client, name, labels=None, taints=None):
    """A node kwok simulates (annotation kwok.x-k8s.io/node=fake), returned once it is Ready."""
    client.create(
        "Node",
        {
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": dict({"kubernetes.io/hostname": name, "type": "kwok"}, **(labels or {})),
            },
            "spec": {"taints": list(taints or [])},
            "status": {"allocatable": NODE_RESOURCES, "capacity": NODE_RESOURCES},
        },
    )
    client.watch_until("Node", k8s.named_ready([name]), field_selector="metadata.name=" + name, timeout=60)


def deployment(name, replicas, pod_spec, pod_annotations=None):
    """A Deployment whose pods carry the label app=<name>."""
    template_meta = {"labels": {"app": name}}
    if pod_annotations:
        template_meta["annotations"] = pod_annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
