# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.volume_map: a workload's volumes with the names and paths layer 5 needs."""

from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.module_utils.mounts import kind_node_path

DOCUMENTATION = r"""
name: volume_map
short_description: A workload's volumes with their PV and PVC names and the path the kind node sees
version_added: "0.2.0"
description:
  - For each volume (C(name), C(host_path), C(mount_path), optional C(capacity)) returns C(name),
    C(pv) (O(pv_prefix) + name), C(pvc) (O(deployment)-name), C(host_path) (normalized),
    C(node_path) (the host path as the kind node sees it, O(cluster_root) replaced by
    O(kind_mount_root); null when the path is outside O(cluster_root)), C(outside), C(mount_path)
    and C(capacity) (O(default_capacity) when the volume names none).
  - The mapping is the one cluster_health checks PVs against (the host path C(/srv/kind/solana/ledger)
    is C(/mnt/solana/ledger) in the node when C(/srv/kind) is mounted at C(/mnt)).
options:
  _input:
    description: The volumes (C(workload_deploy_volumes)).
    type: list
    elements: dict
    required: true
  cluster_root:
    description: The host path the kind node mounts (C(strata_cluster_root)).
    type: str
    required: true
  kind_mount_root:
    description: Where the node mounts it (C(strata_kind_mount_root)).
    type: str
    required: true
  pv_prefix:
    description: Prefix of the PersistentVolume names.
    type: str
    required: true
  deployment:
    description: The workload's name; PVCs are C(<deployment>-<volume>).
    type: str
    required: true
  default_capacity:
    description: Capacity of a volume that names none.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: The volumes of the validator
  ansible.builtin.debug:
    msg: >-
      {{ volumes | strata.ops.volume_map(cluster_root='/srv/kind', kind_mount_root='/mnt',
         pv_prefix='solana-', deployment='validator', default_capacity='1Ti') }}
  vars:
    volumes:
      - {name: ledger, host_path: /srv/kind/solana/ledger, mount_path: /data/ledger}
"""

RETURN = r"""
_value:
  description: One dict per volume (name, pv, pvc, host_path, node_path, outside, mount_path, capacity).
  type: list
  elements: dict
"""


def volume_map(volumes, *, cluster_root, kind_mount_root, pv_prefix, deployment, default_capacity):
    out = []
    for volume in volumes or []:
        missing = [key for key in ("name", "host_path", "mount_path") if not volume.get(key)]
        if missing:
            raise AnsibleFilterError(f"volume_map: volume {volume!r} lacks {', '.join(missing)}")
        host_path = volume["host_path"].rstrip("/") or "/"
        node_path = kind_node_path(host_path, cluster_root, kind_mount_root)
        out.append(
            {
                "name": volume["name"],
                "pv": f"{pv_prefix}{volume['name']}",
                "pvc": f"{deployment}-{volume['name']}",
                "host_path": host_path,
                "node_path": node_path,
                "outside": node_path is None,
                "mount_path": volume["mount_path"],
                "capacity": volume.get("capacity") or default_capacity,
            }
        )
    return out


class FilterModule:
    def filters(self):
        return {"volume_map": volume_map}
