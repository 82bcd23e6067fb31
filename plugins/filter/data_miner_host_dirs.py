# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.data_miner_host_dirs: the host directories a node of the pipeline needs."""

from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.data_miner_manifests import checked_and_rendered
from ansible_collections.strata.ops.plugins.module_utils import data_miner

DOCUMENTATION = r"""
name: data_miner_host_dirs
short_description: The host directories one node of the data-miner pipeline must hold before its pods start
version_added: "0.2.0"
description:
  - From the objects P(strata.ops.data_miner_manifests#filter) renders for the config - every
    C(DirectoryOrCreate) hostPath of every workload placed on O(node) (the kubelet would make a
    missing one as root 0755, which grafana and loki cannot write), then SeaweedFS's C(data_dir) and
    C(storage.db_path) themselves where something lies below them.
  - An infrastructure image's data directory is owned by the user the image runs as (O(owners), by
    the image's name without registry and tag); everything else is root's, 0755.
author:
  - strata.ops maintainers (!UNKNOWN)
options:
  _input:
    description: The checked cluster config (the C(cluster_config) variable of the inventory plugin).
    type: dict
    required: true
  node:
    description: The node (host of the config's C(cluster.nodes)).
    type: str
    required: true
  owners:
    description: "Owners by image name - C({postgres: {uid: 999, gid: 999, mode: '0700'}})."
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: The directories of this node
  ansible.builtin.set_fact:
    dirs: "{{ cluster_config | strata.ops.data_miner_host_dirs(node=inventory_hostname, owners=owners) }}"
"""

RETURN = r"""
_value:
  description: C(path), C(uid), C(gid), C(mode), C(for) (the workload, or C(parent)) per directory, by path.
  type: list
  elements: dict
"""


def data_miner_host_dirs(config, node, owners=None):
    doc, objects = checked_and_rendered(config)
    try:
        return data_miner.host_dirs(doc, objects, node, owners or {})
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(
            f"data_miner_host_dirs: owners must map image names to uid, gid, mode ({exc})"
        ) from None


class FilterModule:
    def filters(self):
        return {"data_miner_host_dirs": data_miner_host_dirs}
