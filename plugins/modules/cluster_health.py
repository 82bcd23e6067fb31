#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: cluster_health
short_description: Read-only health report of a Kubernetes cluster (nodes, pods, workloads, PV paths)
version_added: "0.1.0"
description:
  - Reads the cluster through its API and reports, as data and as one human line
    (C(summary)), what is wrong.
  - Nodes - readiness, pressure conditions, cordoned nodes (C(spec.unschedulable)), their labels
    and taints; with O(expected_nodes), missing nodes, labels, annotations, allocatable amounts and taints.
  - Pods - not Running or not Ready, waiting in C(CrashLoopBackOff) (or an image pull / config
    error), restarted at least O(restart_threshold) times, stuck terminating.
  - Deployments and StatefulSets - ready replicas against wanted replicas.
  - PersistentVolumes - a C(hostPath)/C(local) path that is not the kind node's view of the host
    path (with O(host_path_root) C(/srv/kind) and O(kind_mount_root) C(/mnt), a PV for the host
    directory C(/srv/kind/solana/ledger) must use C(/mnt/solana/ledger)).
  - Never changes anything - it only sends GET requests (and, with O(wait_timeout), a watch),
    so every object keeps its resourceVersion.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.attributes.read_only
  - strata.ops.k8s_auth
attributes:
  platform:
    support: full
    platforms: posix
    details: Runs on the controller and talks to the API server.
options:
  namespaces:
    description:
      - Check pods, Deployments and StatefulSets only in these namespaces (all when omitted),
        and only the PVs bound to claims in them (plus those in O(expected_pvs)).
      - A name that is not a namespace of the cluster fails the task with the list of
        namespaces that exist (unless O(allow_missing_namespaces=true)).
    type: list
    elements: str
  allow_missing_namespaces:
    description:
      - Report a namespace of O(namespaces) that does not exist in RV(missing_namespaces)
        instead of failing, for callers that read a namespace before they create it.
    type: bool
    default: false
  nodes:
    description:
      - Check only these nodes. A name that is not a node of the cluster fails the task with
        the list of nodes that exist.
    type: list
    elements: str
  expected_nodes:
    description:
      - Nodes that must be registered, each with the labels, annotations and allocatable
        amounts it must carry (other keys on the node are fine) and, when C(taints) is given,
        exactly those taints (list of C(key), C(value), C(effect)).
      - C(unschedulable=true) says the node must be cordoned (an experiment's node); its cordon
        is then not a problem.
      - Any other shape fails the task before the API server is asked.
      - 'Example: C({strata-lab-2: {labels: {strata.io/role: experiment}, taints: [{key: experiment,
        value: dedicated, effect: NoSchedule}]}}).'
    type: dict
  expected_objects:
    description:
      - Manifests (C(apiVersion), C(kind), C(metadata.name), C(metadata.namespace) and the fields
        they set) to compare with the live objects, reported in C(objects). Read with one GET each;
        nothing is applied.
      - An object whose every field the manifest sets has that value (lists item by item, in order;
        fields the manifest leaves out are not compared) has an empty C(drift), so applying the
        manifest would change nothing. Layer 5 applies its objects only when one is missing or drifts.
      - Only kinds this collection's client knows (Namespace, PersistentVolume(Claim), Deployment,
        StatefulSet, ConfigMap ...).
    type: list
    elements: dict
  wait_timeout:
    description:
      - Seconds to wait (with a watch, not polling) for the checked nodes to become Ready
        before the report is made. C(0) reports the state as it is.
    type: int
    default: 0
  restart_threshold:
    description:
      - A container restarted this many times or more is a problem. C(0) turns the check off.
    type: int
    default: 3
  host_path_root:
    description:
      - Host directory that is bind-mounted into the kind node, for example C(/srv/kind).
    type: path
  kind_mount_root:
    description:
      - Where O(host_path_root) appears inside the kind node, for example C(/mnt). Without it
        PV paths are not checked.
    type: path
  expected_pvs:
    description:
      - 'PV name to the HOST path it must serve, for example
        C({validator-ledger: /srv/kind/solana/ledger}). Its C(hostPath) must be that path
        translated from O(host_path_root) to O(kind_mount_root). A listed PV that does not
        exist is a problem.'
    type: dict
  fail_on_problems:
    description:
      - Fail the task when there is a problem (the report is still returned).
    type: bool
    default: false
notes:
  - 'Runs on the controller (C(delegate_to: localhost)); the kubeconfig never leaves it.'
seealso:
  - module: kubernetes.core.k8s_info
"""

EXAMPLES = r"""
- name: Health of the validator's namespace, PV paths included
  strata.ops.cluster_health:
    kubeconfig: "{{ strata_kubeconfig }}"
    namespaces: [laconic-laconic-70ce4c4b47e23b85]
    host_path_root: /srv/kind
    kind_mount_root: /mnt
    expected_pvs:
      validator-ledger: /srv/kind/solana/ledger
      validator-snapshots: /srv/kind/solana/snapshots
  delegate_to: localhost
  run_once: true
  register: health

- name: Show it
  ansible.builtin.debug:
    msg: "{{ health.summary }}"
  delegate_to: localhost
  run_once: true

- name: Layer 3 invariants - every node Ready with its labels and taints
  strata.ops.cluster_health:
    kubeconfig: "{{ strata_kubeconfig }}"
    namespaces: [default]
    expected_nodes:
      strata-lab-2:
        labels: {strata.io/role: experiment}
        taints: [{key: experiment, value: dedicated, effect: NoSchedule}]
    wait_timeout: 60
    fail_on_problems: true
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
healthy:
  description:
    - True when no problem was found. A workload scaled to 0 with nothing left is not a problem;
      it is listed in RV(stopped) and named first in RV(summary).
  returned: always
  type: bool
problems:
  description: One entry per problem found.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: Kind of the object (Node, Pod, Deployment, StatefulSet, PersistentVolume).
      type: str
    name:
      description: Its name.
      type: str
    namespace:
      description: Its namespace (namespaced kinds only).
      type: str
    reason:
      description: What is wrong, in words.
      type: str
      sample: container worker CrashLoopBackOff; container worker restarted 5 times
summary:
  description:
    - "One human line: C(healthy: ...); C(stopped 0/0: NS/NAME; nothing else wrong: ...) when the
      only thing to say is that workloads are scaled to 0; or C(N problem(s) in ...)."
  returned: always
  type: str
  sample: "1 problem(s) in 2 nodes, 3 pods, 1 workloads, 4 persistent_volumes: Pod ns/p: phase Pending"
stopped:
  description: The workloads scaled to 0 with no replica left, as C(namespace/name).
  returned: always
  type: list
  elements: str
  sample: [strata-solana/solana]
nodes:
  description:
    - The checked nodes (name, ready, unschedulable, labels, annotations, taints, allocatable,
      resource_version).
  returned: always
  type: list
  elements: dict
workloads:
  description:
    - Deployments and StatefulSets (kind, name, namespace, replicas, ready_replicas, ready, and
      C(state), one of C(ready), C(not ready), C(stopped) (0 wanted, none left), C(stopping)).
    - Each with C(pods), the pods its selector selects (name, node, phase, ready), and
      C(held_stopped), the reason of a hold (annotation C(strata.io/held-stopped), set by
      C(playbooks/stop.yml -e hold=true)) or null.
  returned: always
  type: list
  elements: dict
pods:
  description: Pods checked, counted by phase.
  returned: always
  type: dict
  sample: {"Running": 3, "Pending": 1}
persistent_volumes:
  description: Checked PVs (name, path, claim).
  returned: always
  type: list
  elements: dict
objects:
  description: One entry per manifest of O(expected_objects), in order (empty without it).
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: The manifest's kind.
      type: str
    name:
      description: Its name.
      type: str
    namespace:
      description: Its namespace (null for a cluster-scoped object).
      type: str
    missing:
      description: Whether the object does not exist.
      type: bool
    drift:
      description:
        - The fields (dotted paths, list items as C([i])) whose live value differs from the manifest's.
      type: list
      elements: str
missing_namespaces:
  description: Namespaces of O(namespaces) that do not exist (only with O(allow_missing_namespaces)).
  returned: always
  type: list
  elements: str
api_server:
  description: URL of the API server that answered.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import health
from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.k8s import K8S_AUTH_ARGSPEC, client_from_module


def main():
    argument_spec = dict(K8S_AUTH_ARGSPEC)
    argument_spec.update(
        namespaces=dict(type="list", elements="str"),
        allow_missing_namespaces=dict(type="bool", default=False),
        nodes=dict(type="list", elements="str"),
        expected_nodes=dict(type="dict"),
        wait_timeout=dict(type="int", default=0),
        restart_threshold=dict(type="int", default=3),
        host_path_root=dict(type="path"),
        kind_mount_root=dict(type="path"),
        expected_pvs=dict(type="dict"),
        fail_on_problems=dict(type="bool", default=False),
        expected_objects=dict(type="list", elements="dict"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, lambda: health.run(module.params, lambda: client_from_module(module)))


if __name__ == "__main__":
    main()
