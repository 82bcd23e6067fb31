#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: snapshot_fetch
short_description: Download a fresh Solana snapshot from several sources at once, resumably
version_added: "0.1.0"
description:
  - Finds the archives each source offers. An RPC node (a base URL) is asked with HEAD for
    C(/snapshot.tar.bz2) and C(/incremental-snapshot.tar.bz2); the redirect's Location names
    the archive and its slot, as solana-snapshot-finder reads them. A plain URL names its
    archive in its last path element.
  - Only archives agave loads are considered (C(.tar.zst) or C(.tar.lz4), named as agave
    names them; see M(strata.ops.snapshot_freshness)).
  - Measures each source's speed (C(connections_per_server) streams for
    C(speed_test_seconds)), leaves out sources below C(min_speed), and picks the newest full
    archive (with the newest incremental archive on it) within C(max_lag_slots) of the tip.
  - The tip comes from C(rpc_endpoints) (C(getSlot), finalized; endpoints whose
    C(getGenesisHash) differ are refused as different clusters, and an archive above the tip
    is refused as another cluster's). Without C(rpc_endpoints) no tip is checked; the lag is
    measured against the newest archive on offer, the result says C(tip_checked=false) and a
    warning says so.
  - Downloads with several connections spread over every source serving the same archive
    (like aria2c with C(-x) C(-s) C(-k)) into a hidden temporary file in C(snapshot_dir). A
    control file next to it records the finished byte ranges, so a run that was interrupted
    (even killed) resumes and fetches only the missing ranges. A source that falls below
    C(min_speed) during the download is dropped and the others take over its ranges; near the
    end, idle connections take over parts of the ranges still in flight so that all finish
    together.
  - Checks free space before starting (the archives and room for their control files). A
    disk that fills up during the download stops it at once with a message about space, and the
    bytes already recorded stay for the next run, which resumes.
  - Verifies the length (a source without Range support must announce the archive's length
    in C(Content-Length), and a body that ends early is never taken for the file), the
    compressed stream (C(zstd -t) / C(lz4 -t)) and a SHA-256 when one is
    given or a source serves C(<archive>.sha256); only then renames the file atomically to
    its final name. No partial file ever carries a final archive name.
  - Keeps the newest C(keep) full archives (and incrementals on them), deleting older ones
    only after the new archive verified.
  - Writes a small JSON status file (bytes, rate, ETA) while it works, for another task to
    read when this one runs with C(async).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Discovers, measures and plans; downloads and deletes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  snapshot_dir:
    description: Directory that receives the archives (must exist), for example C(/srv/kind/solana/snapshots).
    type: path
    required: true
  sources:
    description:
      - RPC node base URLs (C(http://1.2.3.4:8899)) and/or plain archive URLs
        (C(https://mirror/snapshot-<slot>-<hash>.tar.zst)). Only C(http://) and C(https://) URLs
        are accepted.
    type: list
    elements: str
    required: true
  rpc_endpoints:
    description:
      - JSON-RPC URLs for the tip (C(getSlot), finalized), for example C(http://10.0.0.5:8899).
      - Without them no tip is checked (C(tip_checked=false), with a warning), and the newest slot
        any source offers stands in for the tip. When they are given but none answers, the task
        fails with their errors.
    type: list
    elements: str
    default: []
  max_lag_slots:
    description:
      - Largest accepted distance between the tip and the archive's slot (the incremental's
        when there is one).
    type: int
    default: 20000
  min_speed:
    description:
      - Bytes per second a source must reach, when measured and during the download
        (agave's default is 10 MiB/s). C(0) disables the check.
    type: float
    default: 10485760
  incremental:
    description: Also fetch the newest incremental archive built on the chosen full archive.
    type: bool
    default: true
  connections_per_server:
    description: Connections per source (aria2c C(-x)).
    type: int
    default: 16
  split:
    description: Connections in all, over every source (aria2c C(-s)).
    type: int
    default: 32
  min_split_size:
    description:
      - Smallest piece in bytes the download is first cut into (aria2c C(-k)); the missing bytes
        are cut into C(split) pieces, none smaller than this.
      - Near the end, a connection with nothing left to do takes over the end of the range that
        would finish last (down to 1 MiB, when that ends it at least 0.25 s sooner), so that all
        connections stay busy until the end and a slow source's ranges move to faster ones.
    type: int
    default: 52428800
  speed_test_seconds:
    description: Seconds spent measuring each source before choosing; C(0) skips the test.
    type: float
    default: 2.0
  speed_grace_seconds:
    description: Seconds a source may stay below C(min_speed) at the start of the download.
    type: float
    default: 5.0
  timeout:
    description: Seconds to wait for a connection or an answer.
    type: float
    default: 15.0
  keep:
    description: Newest full archives to keep (the new one included); older ones are deleted after success.
    type: int
    default: 2
  reserve_bytes:
    description: Bytes that must stay free on the file system after the download.
    type: int
    default: 0
  verify_archive:
    description: Test the compressed stream before renaming (needs C(zstd) / C(lz4) for those archives).
    type: bool
    default: true
  checksums:
    description: SHA-256 per archive name (C(sha256:<hex>) or C(<hex>)), checked before renaming.
    type: dict
    default: {}
  checksum_from_source:
    description: Look for C(<archive URL>.sha256) on the sources and check it when one is served.
    type: bool
    default: true
  status_file:
    description:
      - JSON progress file (state, bytes_done, bytes_total, rate, ETA), replaced about twice a second.
      - A run that finds every planned archive present keeps the last download's record in it (its
        rate_history, which the health report charts; C(last_download_updated)) and adds C(already_present).
    type: path
notes:
  - The hash in an archive name is the bank hash of that slot, not a checksum of the file.
  - Runs on the host that stores the snapshots (it downloads there).
seealso:
  - module: strata.ops.snapshot_freshness
"""

EXAMPLES = r"""
- name: Fetch a snapshot within 20,000 slots of mainnet, in the background
  strata.ops.snapshot_fetch:
    snapshot_dir: /srv/kind/solana/snapshots
    sources:
      - http://rpc-a.example:8899
      - http://rpc-b.example:8899
    rpc_endpoints: [https://api.mainnet-beta.solana.com]
    status_file: /srv/kind/solana/snapshots/.strata-fetch-status.json
    keep: 1
  async: 7200
  poll: 0
  register: fetch_job

- name: Show progress
  ansible.builtin.slurp:
    src: /srv/kind/solana/snapshots/.strata-fetch-status.json
  register: progress
  until: (progress.content | b64decode | from_json).state in ['done', 'failed']
  retries: 720
  delay: 10

- name: Wait for the download
  ansible.builtin.async_status:
    jid: "{{ fetch_job.ansible_job_id }}"
  register: fetched
  until: fetched.finished
  retries: 720
  delay: 10
"""

RETURN = r"""
plan:
  description:
    - The chosen full archive and incremental archive (name, slot, length, sources), and effective_slot.
  returned: success
  type: dict
downloads:
  description:
    - One entry per archive downloaded (name, path, kind, slot, size, elapsed_s, transfer_s
      (the transfer alone), mean_rate_bytes_per_s, resumed_bytes, fetched_bytes,
      refetched_bytes, discarded_bytes (read past a range another connection took over),
      connections, piece_size, ranges_split, sources with bytes, connects, requests and why
      dropped, verified_by, sha256 when checked).
  returned: success
  type: list
  elements: dict
already_present:
  description: Chosen archives that were already in snapshot_dir (not downloaded).
  returned: success
  type: list
  elements: str
deleted:
  description: Older archives deleted after the new one verified.
  returned: success
  type: list
  elements: str
tip_slot:
  description: The cluster's tip from rpc_endpoints; null when no tip was checked (no rpc_endpoints).
  returned: always
  type: int
tip_checked:
  description:
    - Whether the lag was measured against the cluster's tip (rpc_endpoints given and
      answering); false means against the newest archive on offer.
  returned: always
  type: bool
genesis_hash:
  description: The cluster's genesis hash from rpc_endpoints; null without them.
  returned: always
  type: str
newest_offered_slot:
  description: The highest slot among the archives found; null when none was found.
  returned: always
  type: int
endpoints:
  description: One entry per rpc_endpoint (url, ok, genesis_hash, slot, error, elapsed).
  returned: always
  type: list
  elements: dict
candidates:
  description: Every archive found (source, url, name, kind, slot, base_slot, length, ranges).
  returned: always
  type: list
  elements: dict
speeds:
  description: Measured bytes per second per source.
  returned: always
  type: dict
source_errors:
  description: Per source, why it offered nothing usable.
  returned: always
  type: dict
rejected:
  description: Per archive URL, why it was not used (speed, lag, above the tip, length mismatch).
  returned: always
  type: dict
kept_files:
  description:
    - After a failed write (a full disk), the partial download and its control file that stay
      for the next run to resume; empty when nothing was recorded.
  returned: when the download stopped on a local write error
  type: list
  elements: str
recorded_bytes:
  description: After a failed write, the bytes the control file records (what a new run does not fetch again).
  returned: when the download stopped on a local write error
  type: int
size:
  description: Bytes downloaded into final archives by this run.
  returned: when something was downloaded
  type: int
elapsed_s:
  description: Seconds the whole run took.
  returned: when something was downloaded
  type: float
mean_rate_bytes_per_s:
  description: Bytes fetched divided by elapsed_s.
  returned: when something was downloaded
  type: int
status_file:
  description: The progress file written, if any.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.snapshots.fetch import fetch_snapshots


def main():
    module = AnsibleModule(
        argument_spec=dict(
            snapshot_dir=dict(type="path", required=True),
            sources=dict(type="list", elements="str", required=True),
            rpc_endpoints=dict(type="list", elements="str", default=[]),
            max_lag_slots=dict(type="int", default=20000),
            min_speed=dict(type="float", default=10485760),
            incremental=dict(type="bool", default=True),
            connections_per_server=dict(type="int", default=16),
            split=dict(type="int", default=32),
            min_split_size=dict(type="int", default=52428800),
            speed_test_seconds=dict(type="float", default=2.0),
            speed_grace_seconds=dict(type="float", default=5.0),
            timeout=dict(type="float", default=15.0),
            keep=dict(type="int", default=2),
            reserve_bytes=dict(type="int", default=0),
            verify_archive=dict(type="bool", default=True),
            checksums=dict(type="dict", default={}),
            checksum_from_source=dict(type="bool", default=True),
            status_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda: fetch_snapshots(module.params, check_mode=module.check_mode, warn=module.warn))


if __name__ == "__main__":
    main()
