#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapshot_freshness
short_description: Tell whether the local Solana snapshot is close enough to the cluster tip
version_added: "0.1.0"
description:
  - Scans the snapshot directory for full archives C(snapshot-<slot>-<hash>.tar.zst) (also
    C(.tar.lz4); older C(.tar.bz2), C(.tar.gz), C(.tar)) and incremental archives
    C(incremental-snapshot-<base>-<slot>-<hash>.tar.zst).
  - The newest full archive is the one the validator would load; an incremental archive
    counts only when it builds on that full archive (its base slot is present). Partial and
    temporary files (downloads in progress, agave's C(tmp-*) work files, hidden files) are
    ignored; names that look like archives but do not parse are reported as malformed.
  - Asks every JSON-RPC endpoint at once for C(getSlot) (commitment C(finalized) by default)
    with a per-endpoint timeout, and for C(getHighestSnapshotSlot) where the node offers it.
    The tip is the highest slot among the endpoints that answered; those that did not are
    reported with the reason.
  - The verdict compares the newest usable local slot (the incremental one when present,
    else the full one) with the tip. Agave makes a full snapshot every 100,000 slots and an
    incremental one every 100, so the default 20,000-slot rule is met only through
    incrementals; both lags are returned.
  - Read-only; never changes anything.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode gives the same answer.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  snapshot_dir:
    description:
      - Directory holding the snapshot archives (on the kind validator host
        C(/srv/kind/solana/snapshots)). It must exist.
    type: path
    required: true
  rpc_endpoints:
    description:
      - JSON-RPC URLs to ask for the tip, for example C(https://api.mainnet-beta.solana.com).
      - With none (or none answering) the verdict is C(unknown) unless no snapshot is present.
    type: list
    elements: str
    default: []
  max_lag_slots:
    description:
      - Largest accepted distance between the tip and the newest usable local slot.
    type: int
    default: 20000
  timeout:
    description:
      - Seconds to wait for each endpoint's answer to each request.
    type: float
    default: 5.0
  commitment:
    description:
      - Commitment level for C(getSlot).
    type: str
    choices: [processed, confirmed, finalized]
    default: finalized
notes:
  - The file name's hash is the bank hash of that slot, not a checksum; this module does not
    read the archives. Use M(strata.ops.snapshot_fetch) to download and verify one.
  - Runs on the host that holds the snapshots; that host needs to reach the endpoints.
seealso:
  - module: strata.ops.snapshot_fetch
"""

EXAMPLES = r"""
- name: Is the snapshot within 20,000 slots of mainnet?
  strata.ops.snapshot_freshness:
    snapshot_dir: /srv/kind/solana/snapshots
    rpc_endpoints:
      - https://api.mainnet-beta.solana.com
      - https://solana-rpc.publicnode.com
    timeout: 3
  register: freshness

- name: Stop here when the snapshot is too old (runbook, Snapshot Freshness)
  ansible.builtin.assert:
    that: freshness.verdict == 'fresh'
    fail_msg: >-
      snapshot at slot {{ freshness.local_slot }} is {{ freshness.lag_slots }} slots behind
      the tip {{ freshness.tip_slot }}: stop the validator and download a fresh snapshot
      (strata.ops.snapshot_fetch) instead of letting it catch up
  when: freshness.verdict in ['stale', 'missing']
"""

RETURN = r"""
verdict:
  description:
    - C(fresh) (lag within max_lag_slots), C(stale), C(missing) (no usable local snapshot), or
      C(unknown) (a snapshot is present but no endpoint answered).
  returned: always
  type: str
  choices: [fresh, stale, missing, unknown]
local_slot:
  description: Newest usable local slot (incremental when present, else full); null when missing.
  returned: always
  type: int
  sample: 348125400
full_slot:
  description: Slot of the newest full archive; null when none.
  returned: always
  type: int
  sample: 348100000
incremental_slot:
  description: Slot of the newest incremental archive built on that full archive; null when none.
  returned: always
  type: int
  sample: 348125400
full_snapshot:
  description: The newest full archive (name, path, kind, slot, base_slot, hash, size); null when none.
  returned: always
  type: dict
incremental_snapshot:
  description: The incremental archive counted (same keys); null when none.
  returned: always
  type: dict
tip_slot:
  description: Highest slot among the endpoints that answered; null when none answered.
  returned: always
  type: int
  sample: 348131000
lag_slots:
  description: tip_slot minus local_slot; null unless both are known.
  returned: always
  type: int
  sample: 5600
full_lag_slots:
  description: tip_slot minus full_slot; null unless both are known.
  returned: always
  type: int
max_lag_slots:
  description: The limit the verdict used.
  returned: always
  type: int
best_remote_snapshot:
  description:
    - Highest snapshot offered by an endpoint through C(getHighestSnapshotSlot)
      (full, incremental, slot, endpoint); null when no endpoint offered one.
  returned: always
  type: dict
  sample: {full: 348100000, incremental: 348130900, slot: 348130900, endpoint: https://rpc.example}
endpoints:
  description: One entry per endpoint, in the order given (url, ok, slot, error, highest_snapshot, elapsed).
  returned: always
  type: list
  elements: dict
endpoints_answered:
  description: URLs of the endpoints whose getSlot answer was used.
  returned: always
  type: list
  elements: str
endpoints_failed:
  description: URLs of the endpoints that gave no usable answer (see endpoints for why).
  returned: always
  type: list
  elements: str
full_snapshots:
  description: Every full archive found, newest first.
  returned: always
  type: list
  elements: dict
incremental_snapshots:
  description: Every incremental archive whose base full archive is present, newest first.
  returned: always
  type: list
  elements: dict
orphan_incrementals:
  description: Incremental archives whose base full archive is not present (not counted).
  returned: always
  type: list
  elements: str
malformed_files:
  description: Names that look like archives but do not parse, and empty archives (not counted).
  returned: always
  type: list
  elements: str
ignored_files:
  description: Temporary, partial and unrelated files (not counted).
  returned: always
  type: list
  elements: str
snapshot_dir:
  description: The directory scanned.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.snapshots import SnapshotError, freshness_report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            snapshot_dir=dict(type="path", required=True),
            rpc_endpoints=dict(type="list", elements="str", default=[]),
            max_lag_slots=dict(type="int", default=20000),
            timeout=dict(type="float", default=5.0),
            commitment=dict(type="str", choices=["processed", "confirmed", "finalized"], default="finalized"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["max_lag_slots"] < 0:
        module.fail_json(msg="max_lag_slots must be 0 or more (got %d)" % params["max_lag_slots"])
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds (got %s)" % params["timeout"])
    try:
        result = freshness_report(
            params["snapshot_dir"],
            params["rpc_endpoints"],
            max_lag_slots=params["max_lag_slots"],
            timeout=params["timeout"],
            commitment=params["commitment"],
        )
    except SnapshotError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
