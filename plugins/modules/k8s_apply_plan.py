#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: k8s_apply_plan
short_description: Which objects of a rendered set a server-side apply would change, and which are stale
version_added: "0.2.0"
description:
  - Reads the cluster with one LIST per kind of O(definitions) (and of O(prune_kinds)) and splits the
    set into the objects to apply (RV(apply), each with the annotation C(strata.io/applied-hash)) and
    those an apply would leave as they are (RV(unchanged)), so that a converged run sends no PATCH at
    all; hand RV(apply) to M(kubernetes.core.k8s) (C(apply) with C(server_side_apply)).
  - An object is unchanged only when its live C(strata.io/applied-hash) is the hash of the object as
    given now (what was applied last is what is rendered, so no field has been dropped from it) AND
    every field it sets has that value in the live object (nobody ran C(kubectl scale) or edited it
    since). Quantities compare by value (C(2000m) is C(2)); a Secret's C(stringData) compares with
    the decoded C(data). Anything else is applied; server-side apply decides what really changes.
  - With O(prune_labels), the live objects of O(prune_kinds) in the namespaces of O(definitions) that
    carry all those labels and are not in O(definitions) come back in RV(stale) (for
    M(kubernetes.core.k8s) C(state=absent)). Objects in other namespaces (another copy of the set)
    and cluster-scoped objects are never stale.
  - Read-only - only GET requests; check mode is the same run.
  - Its action plugin runs it in the controller's own process (no module upload, no new Python, no
    re-import), which is most of a converged run's cost; it always talks to the API from the controller.
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
  definitions:
    description:
      - The rendered objects (C(apiVersion), C(kind), C(metadata.name), C(metadata.namespace) for
        namespaced kinds). Kinds - Namespace, ConfigMap, Secret, Service, Deployment, StatefulSet,
        DaemonSet, Job, ServiceAccount, PersistentVolumeClaim, PersistentVolume.
      - A list of objects, or the JSON text of one (C(objects | to_json)) - for hundreds of objects
        Ansible templates and passes one string several times faster than the nested maps.
    type: raw
    required: true
  prune_labels:
    description:
      - Labels every object of the set carries (for example C(app.kubernetes.io/part-of) and
        C(app.kubernetes.io/managed-by)); live objects with all of them that the set no longer
        holds are RV(stale). The kinds are then listed with these labels as the selector (one
        request per kind). Empty - nothing is stale, and each kind is listed in the set's namespaces.
    type: dict
    default: {}
  prune_kinds:
    description: Kinds looked at for RV(stale) besides those of O(definitions).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Plan the apply of the rendered objects
  strata.ops.k8s_apply_plan:
    definitions: "{{ objects | to_json }}"
    prune_labels:
      app.kubernetes.io/part-of: data-miner
      app.kubernetes.io/managed-by: strata.ops
    prune_kinds: [Deployment, StatefulSet, DaemonSet, Service, ConfigMap]
  register: plan

- name: Apply what would change (server-side)
  kubernetes.core.k8s:
    apply: true
    server_side_apply: {field_manager: strata-data-miner, force_conflicts: true}
    definition: "{{ plan.apply }}"
  when: plan.apply | length > 0

- name: Remove what the set no longer holds
  kubernetes.core.k8s:
    state: absent
    definition: "{{ plan.stale }}"
  when: plan.stale | length > 0
"""

RETURN = r"""
apply:
  description: The objects to apply as given (in that order) plus the C(strata.io/applied-hash) annotation.
  returned: success
  type: list
  elements: dict
unchanged:
  description: How many objects an apply would not change (a count keeps a converged run's result small).
  returned: success
  type: int
stale:
  description: Live objects with O(prune_labels) that O(definitions) no longer holds, as references.
  returned: success
  type: list
  elements: dict
new_namespaces:
  description: The namespaces of O(definitions) that do not exist yet (a dry run cannot apply into them).
  returned: success
  type: list
  elements: str
  sample: [data-miner]
requests:
  description: How many LIST requests were sent.
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.k8s import client_from_module
from ansible_collections.strata.ops.plugins.module_utils.k8s.apply_plan import ARGUMENT_SPEC, read_and_plan


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run_module(module, lambda: read_and_plan(module.params, lambda: client_from_module(module)))


if __name__ == "__main__":
    main()
