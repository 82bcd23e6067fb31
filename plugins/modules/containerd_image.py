#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: containerd_image
short_description: Import an image archive into a node's containerd unless it already holds that image
version_added: "0.2.0"
description:
  - "Imports an image archive on this host (C(docker save) output, or an OCI image layout tar) into
    containerd's namespace O(namespace) with C(ctr images import) (or C(k3s ctr images import)),
    as the data-miner operators do for images that no registry serves (C(imagePullPolicy: Never))."
  - Skips the import (C(changed=false)) when containerd already holds the image under O(name) with
    the same config digest (the image ID C(crictl images) shows) as the archive; the archive's digest
    comes from its own index, containerd's from the image's target in its content store.
  - Without O(name) the image is named by the archive (C(RepoTags) of C(docker save), or
    C(io.containerd.image.name) of an OCI layout); with it, the imported image is also tagged O(name).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Reads the archive and what containerd holds; reports the import it would run.
  diff_mode:
    support: none
  platform:
    platforms: linux
    support: full
options:
  archive:
    description: The image archive on this host.
    type: path
    required: true
  name:
    description:
      - The image reference pods use (C(data-miner:latest) is C(docker.io/library/data-miner:latest)
        to containerd).
      - Default the name the archive carries.
    type: str
  address:
    description:
      - containerd's socket. k3s - C(/run/k3s/containerd/containerd.sock); MicroK8s -
        C(/var/snap/microk8s/common/run/containerd.sock).
    type: path
    default: /run/containerd/containerd.sock
  namespace:
    description: containerd namespace; the kubelet's (CRI) images are in C(k8s.io).
    type: str
    default: k8s.io
  ctr_command:
    description: The ctr client as a command, for example C([k3s, ctr]) on k3s.
    type: list
    elements: str
    default: [ctr]
notes:
  - Run it on every node with the archive copied there first (M(ansible.builtin.copy)); the data-miner
    flow does both.
requirements:
  - containerd's C(ctr) client (or k3s) on the host
"""

EXAMPLES = r"""
- name: Import the pipeline's image on a k3s node
  strata.ops.containerd_image:
    archive: /var/tmp/data-miner.tar
    name: data-miner:latest
    address: /run/k3s/containerd/containerd.sock
    ctr_command: [k3s, ctr]
"""

RETURN = r"""
image:
  description: The image reference in containerd.
  returned: success
  type: str
  sample: docker.io/library/data-miner:latest
digest:
  description: The archive's config digest (the image ID).
  returned: success
  type: str
before:
  description: The config digest containerd held under that name before, or null.
  returned: success
  type: str
command:
  description: The import command check mode would run.
  returned: check mode and changed
  type: list
  elements: str
commands:
  description: The ctr commands run.
  returned: changed and not check mode
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.image_import import ensure


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            name=dict(type="str"),
            address=dict(type="path", default="/run/containerd/containerd.sock"),
            namespace=dict(type="str", default="k8s.io"),
            ctr_command=dict(type="list", elements="str", default=["ctr"]),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda: ensure(module.params, module.check_mode, module.run_command))


if __name__ == "__main__":
    main()
