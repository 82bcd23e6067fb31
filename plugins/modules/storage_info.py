#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: storage_info
short_description: Report what backs each storage path (ZFS dataset, tmpfs, other mount, plain directory)
version_added: "0.1.0"
description:
  - For each path, reports what really backs it, from C(/proc/self/mountinfo) and the path's
    device number (C(st_dev)), never from the path string alone.
  - C(zfs) - the path is the mount point of a ZFS dataset (OpenZFS C(zfs) or zfs-fuse
    C(fuse.zfs)); reports the dataset, its parent dataset and the mount point.
  - C(tmpfs) - the path is a tmpfs mount point; reports its size in bytes and mount options.
  - C(other) - the path is the mount point of another file system; reports type and source.
  - C(directory) - the path is not a mount point but lives on a parent mount, which is
    reported (with its dataset when that mount is ZFS). This catches a plain directory that
    sits on a parent dataset where a dataset of its own was expected (the C(/srv/solana) trap).
  - C(missing) - nothing exists at the path.
  - Also reports the path's C(/etc/fstab) entry, parsed, and the systemd ordering that entry
    asks for through C(x-systemd.*) options.
  - With I(expect), also says which of those paths cannot become what is expected there without
    hiding or displacing what is there now (C(conflicts)) - the check layers 2 and 4 run before
    they create a dataset or mount a tmpfs.
  - Also reports the host's memory, which a tmpfs's size must fit in.
  - With I(usage), also how full each pool, mounted dataset and tmpfs is (the health report's
    storage section).
  - Read-only; never changes anything.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.attributes.read_only
attributes:
  platform:
    support: full
    platforms: linux
    details: Needs C(/proc/self/mountinfo).
options:
  paths:
    description:
      - Absolute paths to inspect. Symbolic links are resolved first.
      - At least one of I(paths), I(expect), I(pools) and I(zfs_plan) is needed.
    type: list
    elements: path
  expect:
    description:
      - What each path should become. Its path is inspected too (as if listed in I(paths)), and
        C(conflicts) names it when it holds something else.
      - For C(kind=zfs) that is a plain directory with files in it (the dataset's mount would
        hide them), another dataset mounted there, or a tmpfs or other mount there.
      - For C(kind=tmpfs) that is a plain directory with files in it, or a ZFS dataset or other
        mount already there (a tmpfs already there is fine, whatever its size).
      - A missing path or an empty directory is never a conflict.
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      kind:
        description: What should be mounted at the path.
        type: str
        choices: [zfs, tmpfs]
        default: zfs
      dataset:
        description: The ZFS dataset that should be mounted there (required with C(kind=zfs)).
        type: str
  pools:
    description:
      - ZFS pools whose health to report in C(pools) (one C(zpool list) per pool), so the check
        that layer 1 left an ONLINE pool costs no module run of its own.
    type: list
    elements: str
  usage:
    description:
      - Also report how full things are. Each entry of C(pools) gets its size, allocated and free
        bytes and capacity (one C(zpool list) per pool, as before), and each path entry gets
        C(usage) - for a mounted dataset its used and available bytes and quotas (one C(zfs get
        -Hp) for all of them), for a tmpfs its size, used and available bytes (C(statvfs)).
    type: bool
    default: false
  zfs_plan:
    description:
      - A request in the shape of M(strata.ops.zfs_dataset)'s options (I(pool), I(datasets));
        C(zfs_plan) reports what that module would do with it, computed by the same planner in
        check mode (one C(zfs get) pass). A role can then skip M(strata.ops.zfs_dataset) when
        nothing would change, and run it otherwise.
    type: dict
    suboptions:
      pool:
        description: As M(strata.ops.zfs_dataset)'s I(pool).
        type: str
      datasets:
        description: As M(strata.ops.zfs_dataset)'s I(datasets).
        type: list
        elements: dict
        required: true
        suboptions:
          name:
            description: Full dataset name, C(pool/a/b).
            type: str
            required: true
          state:
            description: C(present) or C(absent), as for M(strata.ops.zfs_dataset).
            type: str
            choices: [present, absent]
            default: present
          properties:
            description: ZFS properties, compared as M(strata.ops.zfs_dataset) compares them.
            type: dict
            default: {}
          recursive:
            description: As M(strata.ops.zfs_dataset)'s I(recursive) (for C(state=absent)).
            type: bool
            default: false
notes:
  - Called C(strata.ops.storage_facts) before 0.2.0. It returns C(paths), not C(ansible_facts), so by
    Ansible's naming it is an C(_info) module; the old name still works (with a deprecation warning)
    until 2.0.0.
  - Runs on the host that owns the storage. A path that is a mount point but shows another
    device than its mountinfo entry (for example a stale mount) is reported by its device.
seealso:
  - module: strata.ops.zfs_dataset
"""

EXAMPLES = r"""
- name: Inspect the workload storage (kind validator host)
  strata.ops.storage_info:
    paths:
      - /srv/kind
      - /srv/kind/solana
      - /srv/kind/solana/ramdisk
      - /srv/solana
  register: storage

- name: Refuse to hide files or another mount under the cluster root (layer 2)
  strata.ops.storage_info:
    expect:
      - path: /srv/kind
        dataset: biscayne/DATA/srv/kind
  register: root
  failed_when: root.conflicts | length > 0

- name: Read the cluster root and what zfs_dataset would change there
  strata.ops.storage_info:
    paths: [/srv/kind]
    zfs_plan:
      pool: biscayne
      datasets:
        - name: biscayne/DATA/srv/kind
          properties: {mountpoint: /srv/kind}
  register: root

- name: Converge the dataset only when the read says something would change
  strata.ops.zfs_dataset:
    pool: biscayne
    datasets:
      - name: biscayne/DATA/srv/kind
        properties: {mountpoint: /srv/kind}
  when: not root.zfs_plan.converged

- name: Layer 4 invariants
  ansible.builtin.assert:
    that:
      - storage.paths['/srv/kind/solana'].kind == 'zfs'
      - storage.paths['/srv/kind/solana'].parent_dataset == 'biscayne/DATA/srv/kind'
      - storage.paths['/srv/kind/solana/ramdisk'].kind == 'tmpfs'
      - storage.paths['/srv/kind/solana/ramdisk'].fstab.systemd.requires == ['zfs-mount.service']
    fail_msg: "/srv/kind/solana must be a dataset with a tmpfs ramdisk on it"
"""

RETURN = r"""
memory_total_bytes:
  description:
    - The host's memory (C(MemTotal) of C(/proc/meminfo)) in bytes, what a tmpfs's size must fit in.
    - Null when C(/proc/meminfo) does not tell.
  returned: always
  type: int
  sample: 25769803776
zfs_plan:
  description: What M(strata.ops.zfs_dataset) would do with I(zfs_plan); null without it.
  returned: always
  type: dict
  sample: {"converged": true, "problem": null, "datasets": [{"name": "lab/DATA", "action": "unchanged"}]}
  contains:
    converged:
      description:
        - True when the plan succeeded and changes nothing.
        - False when something would change, or when the request would be refused (see C(problem)).
      type: bool
    datasets:
      description: M(strata.ops.zfs_dataset)'s C(datasets) result in check mode (empty on a problem).
      type: list
      elements: dict
    problem:
      description:
        - Why M(strata.ops.zfs_dataset) would refuse the request (its own message); null otherwise.
      type: str
pools:
  description: One entry per pool of I(pools).
  returned: always
  type: dict
  sample: {"lab": {"health": "ONLINE", "error": null}}
  contains:
    health:
      description:
        - The pool's health as C(zpool list) prints it (C(ONLINE), C(DEGRADED) ...).
        - Null when it is not imported.
      type: str
    error:
      description:
        - Why there is no health (zpool's own message, e.g. C(cannot open 'tank' - no such pool)).
        - Null otherwise.
      type: str
    size_bytes:
      description:
        - With I(usage), the pool's size as C(zpool list) prints it (three significant digits), in bytes.
        - Null when there is no health.
      type: int
      returned: with usage
    allocated_bytes:
      description: With I(usage), the bytes allocated in the pool (as C(size_bytes)).
      type: int
      returned: with usage
    free_bytes:
      description: With I(usage), the pool's free bytes (as C(size_bytes)).
      type: int
      returned: with usage
    capacity_percent:
      description: With I(usage), C(zpool list)'s capacity (allocated of size) in percent.
      type: int
      returned: with usage
conflicts:
  description:
    - One message per I(expect) entry whose path holds something else, saying what it is and
      what it should be; empty when there is none (or no I(expect)).
  returned: always
  type: list
  elements: str
  sample:
    - /srv/kind is a plain directory with files on / but should be the ZFS dataset biscayne/DATA/srv/kind
paths:
  description:
    - One entry per requested path, keyed by the path as given.
    - Every entry has all the keys below; those that do not apply to its kind are null
      (or an empty list), so templates can test them without C(default).
  returned: always
  type: dict
  contains:
    warning:
      description: Set when the path's device matches no mountinfo entry above it (kind=other).
      type: str
    path:
      description: The path as given.
      type: str
    resolved:
      description: The path with symbolic links resolved.
      type: str
    kind:
      description: What backs the path.
      type: str
      choices: [zfs, tmpfs, other, directory, missing]
    fstype:
      description: File system type of the mount that holds the path (not for missing).
      type: str
      sample: fuse.zfs
    source:
      description: Mount source (the dataset name for ZFS, C(tmpfs) for tmpfs).
      type: str
    mount_point:
      description: The mount point that holds the path (the path itself unless kind=directory).
      type: str
    mount_options:
      description: Per-mount and super-block options of that mount.
      type: list
      elements: str
    dataset:
      description: ZFS dataset of the mount that holds the path (zfs, or directory on ZFS).
      type: str
      sample: biscayne/DATA/srv/kind/solana
    parent_dataset:
      description: Parent dataset of C(dataset) (null for a pool root).
      type: str
      sample: biscayne/DATA/srv/kind
    size_bytes:
      description: Size of a tmpfs in bytes.
      type: int
      sample: 16777216
    parent_mount:
      description: For kind=directory, the mount the directory lives on
        (mount_point, fstype, source, dataset when ZFS).
      type: dict
    device:
      description: The path's device as C(major:minor).
      type: str
    file_type:
      description:
        - C(directory), C(file) or C(other) (what C(stat) says the resolved path is).
        - Null when missing.
      type: str
    mode:
      description:
        - The path's permission bits as four octal digits (of what is mounted there, for a mount point).
        - Null when missing.
      type: str
    owner:
      description: The path's owner name (the uid when it has no name); null when missing.
      type: str
    group:
      description: The path's group name (the gid when it has no name); null when missing.
      type: str
    nearest_existing:
      description: For kind=missing, the closest existing ancestor.
      type: str
    usage:
      description:
        - With I(usage), how full the path's file system is; null for kinds other than zfs and tmpfs.
        - For zfs - C(used_bytes), C(available_bytes), C(quota_bytes) and C(refquota_bytes) (null
          when not set) and C(percent) (used of the refquota, else the quota, else used + available).
        - For tmpfs - C(size_bytes), C(used_bytes), C(available_bytes) and C(percent) (used of size).
        - C(error) instead when it could not be read (zfs's own message).
      type: dict
      returned: with usage
      sample: {"used_bytes": 491520, "available_bytes": 1030152192, "quota_bytes": null,
               "refquota_bytes": null, "percent": 0.0}
    fstab:
      description: The C(/etc/fstab) entry whose mount point is this path, or null.
      type: dict
      contains:
        source:
          description: First field (device, C(LABEL=), dataset, C(tmpfs)).
          type: str
        fstype:
          description: File system type.
          type: str
        options:
          description: Options, in order.
          type: list
          elements: str
        dump:
          description: Fifth field.
          type: int
        passno:
          description: Sixth field.
          type: int
        systemd:
          description: Ordering from C(x-systemd.*) options, lists of units or paths
            (requires, after, before, wants, requires_mounts_for, wanted_by, required_by),
            plus C(automount) and C(nofail) flags.
          type: dict
          sample: {"requires": ["zfs-mount.service"], "after": [], "before": []}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.storage import storage_info
from ansible_collections.strata.ops.plugins.module_utils.zfs.ensure import DATASETS_OPTIONS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path"),
            expect=dict(
                type="list",
                elements="dict",
                options=dict(
                    path=dict(type="path", required=True),
                    kind=dict(type="str", choices=["zfs", "tmpfs"], default="zfs"),
                    dataset=dict(type="str"),
                ),
                required_if=[("kind", "zfs", ("dataset",))],
            ),
            pools=dict(type="list", elements="str"),
            usage=dict(type="bool", default=False),
            zfs_plan=dict(type="dict", options=DATASETS_OPTIONS),
        ),
        required_one_of=[("paths", "expect", "pools", "zfs_plan")],
        supports_check_mode=True,
    )
    run_module(
        module, lambda: storage_info(module.params, module.run_command, get_bin_path=module.get_bin_path)
    )


if __name__ == "__main__":
    main()
