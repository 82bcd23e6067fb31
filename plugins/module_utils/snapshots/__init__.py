# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Solana/Agave snapshot archives, split by concern.

* ``names``: archive names as agave reads them;
* ``scan``: the archives of a local snapshot directory, chosen as agave chooses;
* ``rpc``: the JSON-RPC client (tip, genesis, the snapshots an RPC node offers);
* ``freshness``: the verdict and report of strata.ops.snapshot_freshness;
* ``fetch``: discover, rank, download, verify and prune (strata.ops.snapshot_fetch).

Archive names follow agave's own rule (``names.parse_archive_name``):

* full:        ``snapshot-<slot>-<hash>.tar.zst`` (or ``.tar.lz4``)
* incremental: ``incremental-snapshot-<base slot>-<slot>-<hash>.tar.zst`` (or ``.tar.lz4``)

``<hash>`` is the base58 bank hash of that slot: it identifies the bank, it is NOT a checksum
of the file. An incremental snapshot is usable only together with the full snapshot of its base
slot. Agave makes a full snapshot every 100,000 slots and an incremental one every 100, so a
20,000-slot freshness rule can only be met through incrementals: both are reported.

Everything here uses only the Python standard library (it runs on managed hosts)."""

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError


class SnapshotError(StrataError):
    """Base of the snapshot errors."""
