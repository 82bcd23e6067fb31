#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: pod_checkpoint_info
short_description: List the pod checkpoints (CRIU dumps) in a directory, newest first
version_added: "0.1.0"
description:
  - Lists the dump directories that M(strata.ops.pod_checkpoint) wrote into O(images_dir)
    (C(NAME-YYYYmmddTHHMMSS.mmmZ)), or only those of O(name), newest first.
  - Each checkpoint is reported with what its C(manifest.json) says (name, creation time, target,
    C(leave_running), CRIU version, GPU path) and its size on disk, and whether it is usable
    (a readable manifest and CRIU's C(inventory.img) and C(pstree.img); for a containerd or kubelet
    dump its archive at the size the dump wrote, and a containerd checkpoint image with CRIU's layer,
    which containerd 1.6 and 1.7 leave out of a repeated checkpoint of a container) and restorable with
    C(state=restored) on this host (a Docker container dump, a kubelet archive, or a containerd
    checkpoint whose pod sandbox still runs here, as the restored container joins its namespaces).
    A directory without a valid manifest is listed as unusable, with the reason.
  - Read-only; never changes anything.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.attributes.read_only
attributes:
  platform:
    platforms: linux
    support: full
options:
  images_dir:
    description:
      - The directory that holds the dump directories (O(strata.ops.pod_checkpoint#module:images_dir)).
      - A directory that does not exist holds no checkpoint (C(exists=false)).
    type: path
    required: true
  name:
    description:
      - List only the dumps of this name (O(strata.ops.pod_checkpoint#module:name); by default
        C(NAMESPACE-POD-CONTAINER) or the Docker container's name).
      - Default every dump in O(images_dir).
    type: str
notes:
  - Run it on the host that holds O(images_dir), the one that ran the dump.
seealso:
  - module: strata.ops.pod_checkpoint
"""

EXAMPLES = r"""
- name: List the checkpoints of a pod's container
  strata.ops.pod_checkpoint_info:
    images_dir: /srv/checkpoints
    name: kybernate-system-pytorch-stress-pytorch
  register: checkpoints

- name: Restore the newest usable one
  strata.ops.pod_checkpoint:
    state: restored
    checkpoint: "{{ checkpoints.latest_restorable }}"
    new_container: pytorch-restored
  when: checkpoints.latest_restorable is not none
"""

RETURN = r"""
images_dir:
  description: The directory listed.
  returned: always
  type: str
exists:
  description: Whether O(images_dir) exists.
  returned: always
  type: bool
name:
  description: The name listed (O(name)), or null for every dump.
  returned: always
  type: str
checkpoints:
  description:
    - The dump directories, newest first (by creation time).
    - Every item has C(directory), C(id) (the directory's base name), C(name), C(created) (RFC 3339
      UTC), C(size_bytes) (on disk now), C(usable), C(restorable) and C(problem) (why it is not
      usable or not restorable; null when it is).
    - Items with a readable manifest also have C(method) (C(criu), or C(containerd) for containerd's
      own checkpoint image, which M(strata.ops.pod_checkpoint) restores with C(method=containerd)),
      C(target) (C(runtime), C(container_name),
      C(container_id), C(image), C(pid), C(pod) with C(namespace), C(name), C(container) or null),
      C(leave_running), C(images_bytes) (measured at the dump), C(criu_version), C(gpu_path)
      (C(none), C(criu-cuda-plugin), C(cuda-checkpoint) or C(cuda-driver-api)),
      C(frozen_time_us) and C(dump_wall_s).
  returned: always
  type: list
  elements: dict
  sample:
    - directory: /srv/checkpoints/app-20250101T000000.000Z
      id: app-20250101T000000.000Z
      name: app
      created: "2025-01-01T00:00:00.000Z"
      size_bytes: 4407296
      usable: true
      restorable: true
      problem: null
      method: criu
      target: {runtime: docker, container_name: app, container_id: 3f2a, image: "app:1", pid: 4242, pod: null}
      leave_running: true
      images_bytes: 4403200
      criu_version: "4.1.1"
      gpu_path: none
      frozen_time_us: 51234
      dump_wall_s: 0.412
latest:
  description: The directory of the newest usable checkpoint, or null.
  returned: always
  type: str
latest_restorable:
  description: The directory of the newest checkpoint C(state=restored) can restore, or null.
  returned: always
  type: str
summary:
  description: One line for a person.
  returned: always
  type: str
  sample: >-
    2 checkpoint(s) of app in /srv/checkpoints, 2 usable;
    newest app-20250101T000000.000Z (2025-01-01T00:00:00.000Z)
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.checkpoint.listing import list_checkpoints
from ansible_collections.strata.ops.plugins.module_utils.common import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images_dir=dict(type="path", required=True),
            name=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda: list_checkpoints(module.params))


if __name__ == "__main__":
    main()
