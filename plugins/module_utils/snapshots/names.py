# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot archive names, by agave's own rule (snapshots/src/paths.rs)."""

import os
import re

from ansible_collections.strata.ops.plugins.module_utils.snapshots import SnapshotError

KIND_FULL = "full"

KIND_INCREMENTAL = "incremental"

# Agave's own rule, snapshots/src/paths.rs (FULL_SNAPSHOT_ARCHIVE_FILENAME_REGEX and
# INCREMENTAL_SNAPSHOT_ARCHIVE_FILENAME_REGEX; [[:digit:]] and [[:alnum:]] are ASCII classes in
# Rust's regex crate). After the match agave parses the slots as u64, the hash as a
# solana_hash::Hash (at most 44 base58 characters decoding to 32 bytes) and the extension as an
# ArchiveFormat: only tar.zst and tar.lz4 (tar.bz2, tar.gz and tar are no longer read).
_EXT = r"(?P<ext>tar\.zst|tar\.lz4)"

FULL_RE = re.compile(r"^snapshot-(?P<slot>[0-9]+)-(?P<hash>[0-9A-Za-z]+)\." + _EXT + r"\Z")

INCREMENTAL_RE = re.compile(
    r"^incremental-snapshot-(?P<base>[0-9]+)-(?P<slot>[0-9]+)-(?P<hash>[0-9A-Za-z]+)\." + _EXT + r"\Z"
)

# Agave also loads archives from this subdirectory (SNAPSHOT_ARCHIVE_DOWNLOAD_DIR, paths.rs).
REMOTE_DIR = "remote"

_U64_MAX = 2**64 - 1

_HASH_MAX_CHARS = 44

_HASH_BYTES = 32

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# Names that start like an archive but break agave's rule: reported with the reason.
_LOOKS_LIKE_ARCHIVE = re.compile(r"^(incremental-)?snapshot-")

_OTHER_EXT = re.compile(r"^(?:snapshot-|incremental-snapshot-[0-9]+-)[0-9]+-[0-9A-Za-z]+\.(?P<ext>.+)\Z")

# Downloads in progress and agave's own work files: reported as such.
_TEMPORARY_RE = re.compile(
    r"(^\.|^tmp-|^tmp_|\.tmp$|\.partial$|\.part$|\.aria2$|\.ctl$|\.download$|\.incomplete$|~$)"
)


class SnapshotNameError(SnapshotError):
    pass


def is_base58_hash(text):
    """True when ``text`` parses as a solana_hash::Hash: <= 44 base58 characters, 32 bytes."""
    if len(text) > _HASH_MAX_CHARS:
        return False
    value = 0
    for char in text:
        digit = _BASE58.find(char)
        if digit < 0:
            return False
        value = value * 58 + digit
    leading_zero_bytes = len(text) - len(text.lstrip("1"))  # each leading "1" is a zero byte
    return leading_zero_bytes + (value.bit_length() + 7) // 8 == _HASH_BYTES


def parse_archive_name(name):
    """Parse an archive file name as agave does; return a dict, or None for other names.

    The dict has kind, slot, base_slot (incrementals; None for full), hash, ext and name.
    Raises SnapshotNameError, with the reason agave skips it, for a name that starts like an
    archive but is not one agave loads (other extension, hash or slot that does not parse).
    """
    base = os.path.basename(name)
    match = FULL_RE.match(base) or INCREMENTAL_RE.match(base)
    if match is None:
        if not _LOOKS_LIKE_ARCHIVE.match(base):
            return None
        other = _OTHER_EXT.match(base)
        if other:
            raise SnapshotNameError(
                f"{base}: agave loads only .tar.zst and .tar.lz4 archives, not .{other.group('ext')}"
            )
        raise SnapshotNameError(
            f"{base}: not named snapshot-<slot>-<hash>.tar.zst|.tar.lz4 or"
            " incremental-snapshot-<base slot>-<slot>-<hash>.tar.zst|.tar.lz4, as agave expects"
        )
    slots = [int(match.group(g)) for g in ("base", "slot") if g in match.groupdict()]
    if max(slots) > _U64_MAX:
        raise SnapshotNameError(f"{base}: a slot does not fit in 64 bits, agave skips it")
    if not is_base58_hash(match.group("hash")):
        raise SnapshotNameError(f"{base}: {match.group('hash')} is not a 32-byte base58 hash, agave skips it")
    incremental = "base" in match.groupdict()
    return dict(
        kind=KIND_INCREMENTAL if incremental else KIND_FULL,
        slot=slots[-1],
        base_slot=slots[0] if incremental else None,
        hash=match.group("hash"),
        ext=match.group("ext"),
        name=base,
    )


def is_temporary_name(name):
    return bool(_TEMPORARY_RE.search(os.path.basename(name)))
