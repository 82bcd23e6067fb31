# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.tree_manifest_diff: a copy's manifest against its source's."""

from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.module_utils import tree_manifest
from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

DOCUMENTATION = r"""
name: tree_manifest_diff
short_description: What a copy of a tree lacks, holds besides, or holds differently, from two manifests
version_added: "0.2.0"
description:
  - Compares the manifest of a source tree with the manifest of its copy, both made by
    M(strata.ops.tree_manifest) with the same algorithm (on the hosts that hold them).
  - Files compare by type, size and hash; symlinks by their target; directories by existing.
author:
  - strata.ops maintainers (!UNKNOWN)
options:
  _input:
    description: The source's manifest (RV(strata.ops.tree_manifest#module:manifest)).
    type: dict
    required: true
  dest:
    description: The copy's manifest.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Compare
  ansible.builtin.set_fact:
    verify: "{{ source_result.manifest | strata.ops.tree_manifest_diff(dest_result.manifest) }}"
"""

RETURN = r"""
_value:
  description:
    - C(missing) (paths the copy lacks), C(extra) (paths only the copy has), C(differing) (C(path),
      C(why)), C(unreadable_source), C(unreadable_dest), and C(identical) (all of them empty).
  type: dict
"""


def tree_manifest_diff(source, dest):
    for name, manifest in (("source", source), ("dest", dest)):
        if not isinstance(manifest, dict) or "entries" not in manifest:
            raise AnsibleFilterError(
                f"tree_manifest_diff: the {name} is not a manifest with entries (the manifest key of "
                "strata.ops.tree_manifest's result, made with return_entries: true)"
            )
    try:
        return tree_manifest.compare(source, dest)
    except StrataError as exc:
        raise AnsibleFilterError(f"tree_manifest_diff: {exc}") from None


class FilterModule:
    def filters(self):
        return {"tree_manifest_diff": tree_manifest_diff}
