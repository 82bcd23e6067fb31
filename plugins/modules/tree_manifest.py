#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: tree_manifest
short_description: A hash manifest of a directory tree, made in parallel on the host that holds it
version_added: "0.2.0"
description:
  - Hashes every regular file under O(path) in O(workers) threads on this host and returns the
    manifest (path relative to O(path), type, size, mtime, hash; symlinks by their target, never
    followed). Compare the manifests of two copies on the controller with the
    P(strata.ops.tree_manifest_diff#filter) filter; that replaces C(rsync -c --dry-run), which reads
    every file of both sides through one ssh stream.
  - With O(manifest_path) the manifest is kept on the host (mode 0600, written atomically) and the
    next run re-hashes only the files whose size or mtime changed since; a run that finds the tree as
    the kept manifest records it leaves that file as it is (no write).
  - Unreadable files (permission denied) are listed in the manifest's C(unreadable) with the reason;
    the rest is hashed.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Hashes as in a real run (it only reads) but does not write O(manifest_path).
  diff_mode:
    support: none
  platform:
    platforms: posix
    support: full
options:
  path:
    description: The tree's root directory on this host.
    type: path
    required: true
  algorithm:
    description:
      - C(blake2b) (BLAKE2b-128, in every Python), C(xxh128) (XXH3-128, needs the Python package
        C(xxhash), Debian C(python3-xxhash)) or C(blake3) (the package C(blake3)); the latter two are
        several times faster per core; C(sha256) is what a pod computes with C(sha256sum) (the copies
        of M(strata.ops.data_serve)). Both sides of a comparison must use the same.
    type: str
    choices: [blake2b, xxh128, blake3, sha256]
    default: blake2b
  workers:
    description: Files hashed at once (threads). The disk is the limit beyond a few.
    type: int
    default: 4
  manifest_path:
    description:
      - Where the manifest is kept on this host, to re-hash only changed files next time. Keep it
        outside O(path) (inside, it would be part of the tree).
    type: path
  return_entries:
    description: Return the entries (needed to compare on the controller); false returns only the stats.
    type: bool
    default: true
notes:
  - C(changed) is always false - the tree is only read; the kept manifest is this module's own cache.
"""

EXAMPLES = r"""
- name: Hash the copy at each side
  strata.ops.tree_manifest:
    path: /srv/dataset
    manifest_path: /var/lib/strata-ops/manifests/dataset.json
    workers: 8
  register: manifest

- name: Compare the destination with the source
  ansible.builtin.set_fact:
    verify: >-
      {{ hostvars['src1'].manifest.manifest
         | strata.ops.tree_manifest_diff(hostvars['dst1'].manifest.manifest) }}
"""

RETURN = r"""
manifest:
  description:
    - The manifest - C(format), C(root), C(algorithm), C(made), C(entries) (by relative path - C(type),
      and for files C(size), C(mtime_ns), C(hash); for links C(target)), C(unreadable) (path - reason).
    - Without O(return_entries), C(entries) is left out.
  returned: success
  type: dict
stats:
  description:
    - C(files), C(bytes), C(hashed) and C(hashed_bytes) (read this run), C(reused) (hash kept from
      O(manifest_path)).
  returned: success
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import tree_manifest
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, run_module


def run(params, check_mode):
    if params["workers"] < 1:
        raise InvalidArgument(f"workers must be 1 or more, got {params['workers']}")
    root = params["path"].rstrip("/") or "/"
    kept = params["manifest_path"]
    if kept and os.path.abspath(kept).startswith(os.path.abspath(root) + os.sep):
        raise InvalidArgument(f"manifest_path {kept} is inside path {root}: keep it outside the tree")
    previous = tree_manifest.load(kept) if kept else None
    manifest = tree_manifest.build(root, params["algorithm"], params["workers"], previous)
    # An unchanged tree leaves the kept manifest as it is: no write, no fsync on a no-op verify.
    if kept and not check_mode and not tree_manifest.same_tree(previous, manifest):
        tree_manifest.save(manifest, kept)
    stats = manifest.pop("stats")
    if not params["return_entries"]:
        manifest.pop("entries")
    return {"changed": False, "manifest": manifest, "stats": stats}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            algorithm=dict(type="str", choices=list(tree_manifest.ALGORITHMS), default="blake2b"),
            workers=dict(type="int", default=4),
            manifest_path=dict(type="path"),
            return_entries=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda: run(module.params, module.check_mode))


if __name__ == "__main__":
    main()
