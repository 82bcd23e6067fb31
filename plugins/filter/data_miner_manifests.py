# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.data_miner_manifests: the data-miner pipeline's objects from its cluster_config."""

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.strata.ops.plugins.module_utils import cluster_config, data_miner

DOCUMENTATION = r"""
name: data_miner_manifests
short_description: The data-miner pipeline's Kubernetes objects from its cluster_config.yaml
version_added: "0.2.0"
description:
  - Renders, from the operators' C(cluster_config.yaml) (the C(cluster_config) variable the inventory
    plugin strata.ops.cluster_config sets, or the file's content), the namespace; the ConfigMap of the
    application's config (O(app_config), made with strata.ops.config_layers); the workers as
    Deployments or StatefulSets (with headless Services) with their replicas, resource presets
    (C(REQUEST-LIMIT) as requests and limits) and placement; the infrastructure on the master with
    its data in hostPath C(storage.db_path/NAME) and its Services (NodePort where C(node_port) is set);
    and SeaweedFS (master and filer on the master, one volume server per node with that node's disk
    limit, a FUSE mount DaemonSet on the nodes that take workers).
  - "Placement comes from the config, not from labels: a required node affinity on
    C(kubernetes.io/hostname) lists the nodes C(schedule_on) allows (C(all) - every node but
    storage-only ones, spread one per node first; C(master); C(gpu) - the GPU nodes). With no GPU node
    in the config (the inventory warns) C(gpu) workers wait, Pending, for a node labelled
    C(strata.io/gpu=true)."
  - Deterministic - the same input gives the same objects in the same order.
  - The C(hf-token) Secret is made only when O(hf_token) is given, and only workers with
    C(hf_token) get it (as the C(HF_TOKEN) variable). Apply its output with C(no_log).
  - Every object carries C(app.kubernetes.io/part-of=data-miner) and
    C(app.kubernetes.io/managed-by=strata.ops), which a prune of removed workers selects on.
  - The config is checked as the inventory plugin checks it; problems fail the filter with every
    problem and its path in the file.
options:
  _input:
    description: The cluster config (C(cluster_config)), references resolved or not.
    type: dict
    required: true
  app_config:
    description: The application's merged config for the C(data-miner-config) ConfigMap; none without it.
    type: dict
  hf_token:
    description: The Hugging Face token for the C(hf-token) Secret (from the controller's environment or
      a vault); the Secret is left out without it.
    type: str
"""

EXAMPLES = r"""
- name: Apply the pipeline (server-side apply, the token never logged)
  kubernetes.core.k8s:
    state: present
    apply: true
    server_side_apply: {field_manager: strata-data-miner}
    definition: >-
      {{ cluster_config | strata.ops.data_miner_manifests(app_config=app_config,
         hf_token=lookup('ansible.builtin.env', 'HF_TOKEN') or omit) }}
  no_log: true
"""

RETURN = r"""
_value:
  description: The objects, namespaces first, then ConfigMaps, Secrets, Services and workloads.
  type: list
  elements: dict
"""


def checked_config(config, show_warnings=True):
    """The config checked, references resolved; its problems as one AnsibleFilterError."""
    checked = cluster_config.check(config)
    if not checked.ok:
        problems = "\n  ".join(checked.errors)
        raise AnsibleFilterError(f"{len(checked.errors)} problem(s) in the cluster config:\n  {problems}")
    for warning in checked.warnings if show_warnings else ():
        Display().warning(f"cluster config: {warning}")
    return checked.doc


def rendering(work):
    """``work()``, a RenderError of it as an AnsibleFilterError."""
    try:
        return work()
    except data_miner.RenderError as exc:
        raise AnsibleFilterError(f"the cluster config cannot be rendered: {exc}") from None


def checked_and_rendered(config, app_config=None, hf_token=None):
    """(the checked config, its objects)."""
    doc = checked_config(config)
    return doc, rendering(lambda: data_miner.render(doc, app_config=app_config, hf_token=hf_token or None))


def data_miner_manifests(config, app_config=None, hf_token=None):
    return checked_and_rendered(config, app_config, hf_token)[1]


class FilterModule:
    def filters(self):
        return {"data_miner_manifests": data_miner_manifests}
