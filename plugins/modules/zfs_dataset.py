#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: zfs_dataset
short_description: Ensure many ZFS datasets and their properties in one call
version_added: "0.1.0"
description:
  - Creates, updates and destroys ZFS filesystems. All requested datasets are read in one
    C(zfs get -Hp) pass, every request is validated (name syntax, pool exists, pool membership,
    property names, every property value by the rules of this host's C(zfs) command line,
    read-only and create-only properties, children and snapshots) before anything changes, and
    only then are the changes applied. An invalid request changes nothing, also in check mode.
  - Property values are checked as the C(zfs) command line of the probed dialect checks them
    (on/off and other fixed choices, for example the compression algorithms, which zfs-fuse has
    fewer of than OpenZFS; sizes with their suffixes and C(none); recordsize powers of two; a
    mountpoint that is an absolute path, C(none) or C(legacy); name and value lengths).
  - Only properties whose source is C(local) count as set. A desired value that the dataset only
    inherits or has by default is set locally, so the dataset keeps it when its parent changes.
  - A present filesystem is also mounted, as C(zfs create) and boot leave it, when its C(canmount) is
    C(on), its mountpoint a path and it is not mounted (a create killed between its create and its
    mount leaves one so); C(changed_properties) then shows C(mounted) C(no) to C(yes).
  - Missing parents of a new dataset are created first, bare and mounted, as C(zfs create -p)
    creates them; each dataset's result names them in I(parents).
  - Writes go through pyzfs (C(libzfs_core)) when it imports and a kernel ZFS answers on
    C(/dev/zfs); otherwise through the C(zfs) command line. A dataset created through
    C(libzfs_core) gets its properties through C(zfs set) and is mounted with C(zfs mount) as
    C(zfs create) would mount it; a dataset with create-only properties is created with
    C(zfs create -o). Both OpenZFS and zfs-fuse (pool version 23) command lines are supported;
    the dialect is probed once. The result says which write path and dialect were used.
  - When the C(zfs) command refuses a change that could not be foreseen (for example a quota
    below the space already used), the run stops there and its failure says exactly what was
    done before (I(done), I(created), I(properties_set), I(destroyed)), with C(changed=true) when
    anything was.
  - Runs on the host that owns the pool.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Reports exactly what would be created, updated and destroyed; changes nothing.
  diff_mode:
    support: full
    details: One before/after entry per dataset that changes.
  platform:
    support: full
    platforms: posix
    details: Hosts with OpenZFS (Linux, FreeBSD) or zfs-fuse (Linux).
options:
  datasets:
    description:
      - The datasets to ensure, applied together.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Full dataset name, C(pool/a/b). Snapshots and bookmarks are not accepted.
        type: str
        required: true
      state:
        description:
          - C(present) creates the dataset (and missing parents, like C(zfs create -p)) and sets
            its properties; C(absent) destroys it.
        type: str
        choices: [present, absent]
        default: present
      properties:
        description:
          - ZFS properties to set locally, for example C(mountpoint), C(compression), C(quota),
            C(recordsize) or user properties such as C(com.example:owner).
          - Sizes may be given as C(10G), C(128K) or bytes, with the suffixes this host's C(zfs)
            takes (zfs-fuse does not take C(KiB)-style suffixes); they are compared in bytes.
            YAML booleans become C(on) / C(off); choices are case-sensitive, as for C(zfs set).
          - Read-only properties (C(used), C(creation), C(volblocksize), ...) are refused.
            Create-only properties (C(casesensitivity), C(normalization), C(utf8only)) are refused
            when the existing dataset has another value.
        type: dict
        default: {}
      recursive:
        description:
          - With I(state=absent), destroy the dataset with its children and snapshots
            (C(zfs destroy -r)). Without it, a dataset with children or snapshots is refused.
          - Clones outside the dataset are never destroyed (no C(-R)); they are named in the
            error instead.
        type: bool
        default: false
  pool:
    description:
      - When given, every dataset must belong to this pool; the pool must exist.
      - Without it, each dataset's pool (its first name component) must exist.
    type: str
notes:
  - The pool itself is not created here; a missing pool is an error that changes nothing.
seealso:
  - module: strata.ops.storage_info
"""

EXAMPLES = r"""
- name: Cluster and workload datasets (kind validator host)
  strata.ops.zfs_dataset:
    pool: biscayne
    datasets:
      - name: biscayne/DATA/srv/kind
        properties:
          mountpoint: /srv/kind
      - name: biscayne/DATA/srv/kind/solana
        properties:
          mountpoint: /srv/kind/solana
          compression: lz4
      - name: biscayne/DATA/srv/kind/solana/ledger
        properties:
          recordsize: 128K
      - name: biscayne/DATA/srv/kind/solana/snapshots
        properties:
          quota: 2T
          atime: "off"

- name: Preview a teardown (check mode with diff)
  strata.ops.zfs_dataset:
    datasets:
      - name: biscayne/DATA/srv/kind/solana/log
        state: absent
        recursive: true
  check_mode: true
  diff: true
"""

RETURN = r"""
changed:
  description: Whether any dataset was (or in check mode would be) created, updated or destroyed.
  returned: always
  type: bool
datasets:
  description: One entry per requested dataset, in request order.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Dataset name.
      type: str
      sample: biscayne/DATA/srv/kind/solana
    state:
      description: The requested state.
      type: str
      sample: present
    action:
      description: What was done (or would be done in check mode).
      type: str
      choices: [created, updated, destroyed, unchanged]
    changed_properties:
      description: Properties that were set, with the value before (null for a new dataset)
        and after, normalised the way C(zfs get -p) prints them (sizes in bytes); C(mounted) when an
        existing filesystem was mounted.
      type: dict
      sample: {"compression": {"before": "off", "before_source": "default", "after": "lz4"}}
    properties:
      description: The desired properties after normalisation (state=present only).
      type: dict
    destroys:
      description: Everything that was destroyed with the dataset (action=destroyed only).
      type: list
      elements: str
    parents:
      description: Missing parent datasets created before this one, shallowest first
        (action=created only).
      type: list
      elements: str
      sample: [biscayne/DATA/srv/kind]
    write_path:
      description: The path that carried out this dataset's change (absent when nothing ran).
      type: str
      choices: [libzfs_core, cli]
  sample:
    - name: biscayne/DATA/srv/kind
      state: present
      action: unchanged
      changed_properties: {}
      properties: {mountpoint: /srv/kind}
write_path:
  description: The write backend chosen on this host.
  returned: success
  type: str
  choices: [libzfs_core, cli]
write_path_reason:
  description: Why C(libzfs_core) was not used, when it was not.
  returned: when write_path is cli
  type: str
  sample: /dev/zfs is missing (no kernel ZFS, e.g. zfs-fuse)
dialect:
  description: The zfs command line dialect probed on this host.
  returned: success
  type: str
  choices: [openzfs, zfs-fuse]
done:
  description: When a change failed part way, every change made before it, in order.
  returned: failure after the first change was attempted
  type: list
  elements: str
  sample:
    - created biscayne/DATA/srv/kind/solana (compression=lz4)
    - set atime=off on biscayne/DATA/srv/kind
created:
  description: When a change failed part way, the datasets created before it.
  returned: failure after the first change was attempted
  type: list
  elements: str
destroyed:
  description: When a change failed part way, the datasets destroyed before it.
  returned: failure after the first change was attempted
  type: list
  elements: str
mounted:
  description: When a change failed part way, the existing datasets mounted before it.
  returned: failure after the first change was attempted
  type: list
  elements: str
properties_set:
  description: When a change failed part way, the properties set before it, per dataset
    (including those a new dataset was created with).
  returned: failure after the first change was attempted
  type: dict
  sample: {"biscayne/DATA/srv/kind": {"atime": "off"}}
errors:
  description: When the request is invalid, one entry per problem (nothing was changed).
  returned: failure of validation
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.zfs import ensure


def main():
    module = AnsibleModule(
        argument_spec=ensure.DATASETS_OPTIONS,
        supports_check_mode=True,
    )
    run_module(
        module,
        lambda: ensure.run(
            module.params,
            module.check_mode,
            module._diff,
            module.run_command,
            get_bin_path=module.get_bin_path,
        ),
    )


if __name__ == "__main__":
    main()
