#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: snapshot_freshness
short_description: Tell whether the local Solana snapshot is close enough to the cluster tip
version_added: "0.1.0"
description:
  - Chooses the archives in the snapshot directory (and its C(remote/) subdirectory) exactly as
    agave does when it starts (its C(FULL_SNAPSHOT_ARCHIVE_FILENAME_REGEX) and
    C(INCREMENTAL_SNAPSHOT_ARCHIVE_FILENAME_REGEX), snapshots/src/paths.rs), that is full archives
    C(snapshot-<slot>-<hash>.tar.zst) or C(.tar.lz4), incremental archives
    C(incremental-snapshot-<base>-<slot>-<hash>.tar.zst) or C(.tar.lz4), where the hash is a
    32-byte base58 hash (any length agave parses). Agave no longer reads C(.tar.bz2),
    C(.tar.gz) or C(.tar) archives.
  - The full archive of the highest slot is the one agave loads, and of the incremental
    archives on that slot the highest one. Agave chooses by name only, so an empty file or a
    directory with the winning name makes the verdict C(unusable). Every other entry is
    listed in C(not_used) with the reason agave does not load it.
  - Asks every JSON-RPC endpoint at once for C(getGenesisHash), C(getSlot) (commitment
    C(finalized) by default) with a per-endpoint timeout, and for C(getHighestSnapshotSlot)
    where the node offers it. The tip is the highest slot among the endpoints that answered;
    those that did not are reported with the reason (and a warning when others answered).
    Endpoints that answer with different genesis hashes are on different clusters, so the module
    fails naming them instead of taking a tip from them.
  - The verdict compares the newest usable local slot (the incremental one when present,
    else the full one) with the tip. Agave makes a full snapshot every 100,000 slots and an
    incremental one every 100, so the default 20,000-slot rule is met only through
    incrementals; both lags are returned.
  - A local slot above the tip is never fresh (verdict C(ahead)), since the endpoints lag or serve
    another cluster, or the directory holds another cluster's snapshots. The verdicts
    C(ahead) and C(unusable) fail the task, with the whole report in the result, because
    starting the validator there is wrong and a download does not repair it.
  - Read-only; never changes anything.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.attributes.read_only
attributes:
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
      - JSON-RPC URLs to ask for the tip, for example C(https://api.mainnet-beta.solana.com) or
        C(http://10.0.0.5:8899); a URL without C(http://) or C(https://) is refused.
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
    - C(fresh) (lag within max_lag_slots), C(stale), C(missing) (no archive agave would load),
      C(unknown) (a snapshot is present but no endpoint answered), C(ahead) (the local slot is
      above the tip; the task fails) or C(unusable) (the archive agave would load is empty, not
      a file, or an incremental not after its base; the task fails).
  returned: always
  type: str
  choices: [fresh, stale, missing, unknown, ahead, unusable]
msg:
  description: The verdict in words, with what to do for C(ahead) and C(unusable).
  returned: always
  type: str
  sample: "fresh: local slot 348125400 is 5600 slots behind the tip 348131000 (limit 20000)"
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
  description:
    - The full archive agave would load (name, path, kind, slot, base_slot, hash, size, and
      problem, null unless it cannot be loaded), or null when none.
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
genesis_hash:
  description: The cluster's genesis hash, as the endpoints that answered gave it; null when none answered.
  returned: always
  type: str
  sample: 5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d
lag_slots:
  description: tip_slot minus local_slot (negative when C(ahead)); null unless both are known.
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
  description:
    - One entry per endpoint, in the order given (url, ok, genesis_hash, slot, error,
      highest_snapshot, elapsed).
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
  description: Every full archive agave could load by its name, newest first.
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
not_used:
  description:
    - Every entry of the directory (and of C(remote/)) agave would not load, with the reason
      (name, path, reason) - older archives, incrementals on another full archive, other
      extensions, hashes or slots agave does not parse, downloads in progress, other files.
  returned: always
  type: list
  elements: dict
  sample: [{name: snapshot-1-x.tar.bz2, path: /srv/kind/solana/snapshots/snapshot-1-x.tar.bz2,
            reason: "snapshot-1-x.tar.bz2: agave loads only .tar.zst and .tar.lz4 archives, not .tar.bz2"}]
snapshot_dir:
  description: The directory scanned.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.snapshots import freshness


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
    run_module(module, lambda: freshness.run(module.params, module.warn))


if __name__ == "__main__":
    main()
