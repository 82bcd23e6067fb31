# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors of a download; their details go into the module's result."""

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError


class TransferError(StrataError):
    """Base of the download errors."""


class SourceError(TransferError):
    """One source failed (status, length mismatch, no Range support when needed, I/O)."""


class TooSlowError(TransferError):
    """Every source was dropped for being slower than min_speed."""


class DiskSpaceError(TransferError):
    """The local file system is full (ENOSPC, EDQUOT): what was recorded stays for a resume."""


class LocalWriteError(TransferError):
    """Writing the temporary or control file failed for another reason than space (EIO, EROFS ...)."""


class IntegrityError(TransferError):
    """The finished file is not the archive (its own check or the checksum failed)."""
