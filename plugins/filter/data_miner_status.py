# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.data_miner_status: the data-miner pipeline's config against the live cluster."""

from ansible_collections.strata.ops.plugins.filter.data_miner_manifests import checked_config, rendering
from ansible_collections.strata.ops.plugins.module_utils import data_miner_status

DOCUMENTATION = r"""
name: data_miner_status
short_description: The data-miner pipeline's cluster_config.yaml against the live nodes, workloads and pods
version_added: "0.2.0"
description:
  - Compares what the operators' C(cluster_config.yaml) renders (strata.ops.data_miner_manifests - the
    same names, kinds, replicas and placement) with the objects kubernetes.core.k8s_info read, and
    returns rows per section, the problems, a verdict (C(healthy) or C(degraded)) and a text report.
  - "Nodes - every config node must be in the cluster, Ready, not cordoned, and carry its labels
    (C(cluster.nodes.NAME.labels), C(strata.io/gpu=true) on GPU nodes, C(kubernetes.io/hostname=NAME))."
  - "Workloads - every worker, infrastructure entry and SeaweedFS server must exist; the live
    C(spec.replicas) must be the config's (a difference is drift, from C(kubectl scale) or
    C(playbooks/data_miner/scale.yml), which the next deploy undoes) and all of them ready; a
    workload of the pipeline that the config no longer renders is reported too."
  - "Pods - every pod not Running and Ready, with the kubelet's reason (C(CrashLoopBackOff) with the
    last exit code, C(Pending) with the scheduler's message, C(ErrImageNeverPull) and the other image
    reasons with the fix - import the image with C(playbooks/data_miner/images.yml)); and every pod on
    a node its workload's placement in the config does not allow (placement drift). Terminating pods
    are listed, not counted as problems."
  - Deterministic - the same input gives the same output. Reads nothing itself.
  - The config is checked as the inventory plugin checks it; problems fail the filter.
options:
  _input:
    description: The cluster config (C(cluster_config)), references resolved or not.
    type: dict
    required: true
  nodes:
    description: The cluster's Node objects (k8s_info C(resources)).
    type: list
    elements: dict
    default: []
  workloads:
    description: The pipeline's Deployments, StatefulSets and DaemonSets, of both namespaces.
    type: list
    elements: dict
    default: []
  pods:
    description: The pipeline's pods, of both namespaces.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Compare
  ansible.builtin.set_fact:
    data_miner_status: >-
      {{ cluster_config | strata.ops.data_miner_status(nodes=node_info.resources,
         workloads=workloads, pods=pods) }}

- name: Report
  ansible.builtin.debug:
    msg: "{{ data_miner_status.report }}"
"""

RETURN = r"""
_value:
  description: The status.
  type: dict
  contains:
    verdict:
      description: C(healthy) when there is no problem, else C(degraded).
      type: str
    healthy:
      description: Whether there is no problem.
      type: bool
    problems:
      description: Every problem, one line each, nodes first, then workloads, then pods.
      type: list
      elements: str
    summary:
      description: One line, the verdict with counts.
      type: str
    nodes:
      description: Per config node - name, role, state (Ready, NotReady, missing; cordoned), labels_missing.
      type: list
      elements: dict
    other_nodes:
      description: Nodes of the cluster that the config does not name (not a problem).
      type: list
      elements: str
    workloads:
      description: Per workload - section, kind, namespace, name, config (replicas the config says; nodes of a
        DaemonSet), spec (live replicas; desired pods of a DaemonSet), ready, state (ok, drift, not ready,
        missing, not in the config).
      type: list
      elements: dict
    pods:
      description: Per pod - namespace, name, workload, node, state, problem (empty when none).
      type: list
      elements: dict
    report:
      description: Text lines - a table per section, then the summary and the problems.
      type: list
      elements: str
"""


def data_miner_status_filter(config, nodes=None, workloads=None, pods=None):
    doc = checked_config(config, show_warnings=False)  # deploy shows them
    return rendering(lambda: data_miner_status.status(doc, nodes, workloads, pods))


class FilterModule:
    def filters(self):
        return {"data_miner_status": data_miner_status_filter}
