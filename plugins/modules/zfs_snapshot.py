#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: zfs_snapshot
short_description: Take a named snapshot of many ZFS datasets and keep the newest N of its prefix
version_added: "0.1.0"
description:
  - Takes C(DATASET@PREFIXSTAMP) of every dataset in I(datasets) (a rollback point, for example
    before a wipe), then, with I(keep), destroys the older snapshots whose name starts with
    I(prefix) so that the newest I(keep) stay per dataset. Snapshots of any other name are never
    touched.
  - Everything is read in one C(zfs get -Hp -d 1) pass and validated (names, every dataset exists
    and is a filesystem or volume) before anything changes; an invalid request changes nothing.
    All snapshots are taken before any old one is destroyed.
  - A snapshot that already has the exact name is reported as C(existed), not taken again.
  - Check mode reports the snapshot it would take and the snapshots it would destroy.
  - Runs the C(zfs) command line (OpenZFS and zfs-fuse answer alike here).
  - To undo what happened after the snapshot, C(zfs rollback DATASET@SNAP) (add C(-r) when newer
    snapshots exist; they are destroyed), or C(zfs clone DATASET@SNAP NEW) to copy files out.
author:
  - strata.ops maintainers (!UNKNOWN)
options:
  datasets:
    description: Filesystems (or volumes) to snapshot, pool/a/b.
    type: list
    elements: str
    required: true
  prefix:
    description:
      - Start of the snapshot name; the retention only counts and destroys snapshots whose name starts
        with it. Letters, digits, C(_), C(.), C(:) and C(-).
    type: str
    required: true
  stamp:
    description: Rest of the snapshot name. Default the UTC time on the host, C(20260521T093500Z).
    type: str
  keep:
    description: Keep the newest I(keep) snapshots of I(prefix) per dataset (the one just taken
      counts) and destroy the older ones. Unset, nothing is destroyed. At least 1.
    type: int
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Rollback point of the ledger before a wipe, keeping the two newest
  strata.ops.zfs_snapshot:
    datasets: [biscayne/DATA/srv/kind/solana/ledger]
    prefix: strata-prewipe-
    keep: 2
  register: prewipe

- name: Say how to roll back
  ansible.builtin.debug:
    msg: "{{ prewipe.snapshots | map(attribute='rollback') | join('; ') }}"
"""

RETURN = r"""
msg:
  description: One line that says what was (or would be) taken and destroyed.
  returned: success
  type: str
  sample: took tank/ledger@strata-prewipe-20260521T093500Z; destroyed
    tank/ledger@strata-prewipe-20260520T101010Z (keep 1 of strata-prewipe-*)
changed:
  description: Whether a snapshot was taken or destroyed (would be, in check mode).
  returned: always
  type: bool
snapshots:
  description: One entry per dataset, in the order given.
  returned: success
  type: list
  elements: dict
  contains:
    dataset:
      description: The dataset.
      type: str
    snapshot:
      description: The snapshot's full name.
      type: str
      sample: tank/ledger@strata-prewipe-20260521T093500Z
    action:
      description: C(taken) (or would be, in check mode) or C(existed) when it had that name already.
      type: str
      choices: [taken, existed]
    destroyed:
      description: Older snapshots of the prefix the retention destroyed (would destroy), oldest first.
      type: list
      elements: str
    kept:
      description: The snapshots of the prefix that stay, oldest first.
      type: list
      elements: str
    rollback:
      description: The command that rolls the dataset back to this snapshot.
      type: str
      sample: zfs rollback tank/ledger@strata-prewipe-20260521T093500Z
    clone:
      description: A command that makes the snapshot's files readable beside the dataset.
      type: str
      sample: zfs clone tank/ledger@strata-prewipe-20260521T093500Z tank/ledger-restore
taken:
  description: The snapshots taken (would be taken).
  returned: success
  type: list
  elements: str
destroyed:
  description: The snapshots destroyed (would be destroyed) by the retention.
  returned: success
  type: list
  elements: str
stamp:
  description: The stamp used (the default one when none was given).
  returned: success
  type: str
write_path:
  description: The write backend (always the zfs command line).
  returned: success
  type: str
  choices: [cli]
done:
  description: When a change failed part way, every change made before it, in order.
  returned: failure after the first change was attempted
  type: list
  elements: str
errors:
  description: When the request is invalid, one entry per problem (nothing was changed).
  returned: failure of validation
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.zfs import snapshot


def main():
    module = AnsibleModule(
        argument_spec=dict(
            datasets=dict(type="list", elements="str", required=True),
            prefix=dict(type="str", required=True),
            stamp=dict(type="str"),
            keep=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    run_module(
        module,
        lambda: snapshot.run(
            module.params, module.check_mode, module.run_command, get_bin_path=module.get_bin_path
        ),
    )


if __name__ == "__main__":
    main()
