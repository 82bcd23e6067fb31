# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ranged, multi-source, resumable HTTP download (what aria2c does for snapshots), stdlib only.

* Every source must serve the same bytes (the same archive name and length).
* The missing part of the file is cut into one piece per connection (none under
  ``min_split_size``); up to ``connections_per_server`` connections per source and ``split``
  in all fetch pieces with ``Range`` requests over kept-alive connections and write them in
  place (``os.pwrite``) into a temporary file of the final length.
* When nothing is left to hand out, an idle connection takes over the end of the range in
  flight that would finish last, cut so that both finish together at the rates seen
  (``Scheduler``): the connections of a fast mirror take work from a slow one, and all of them
  stay busy to the end instead of a few finishing the last pieces alone.
* A control file next to the temporary file (``<tmp>.ctl``, JSON, replaced atomically about
  twice a second after the data is synced) records the byte ranges already written. After an
  interruption (even ``kill -9``) a new run fetches only the ranges it does not list.
* A source whose rate stays below ``min_speed`` after a grace period is dropped and its pieces
  go back to the queue for the others. A source that keeps failing is dropped too.
* A source without Range support can only be used alone, as one stream from byte 0; its answer
  must announce the archive's length (``Content-Length``), and a body that ends early is a
  failed attempt, never a shorter file.
* A write that fails (a full disk: ENOSPC, EDQUOT) stops the whole download at once with
  ``DiskSpaceError``: the bytes recorded in the control file stay for the next run.

By concern: ``http`` (connections, probe, speed test), ``control`` (the control and status
files, space), ``scheduler`` (who fetches which range), ``download`` (the transfer itself),
``verify`` (checks and the final rename), ``errors``. This package is also the transfer API that
snapshots.fetch is given (and that its tests replace), so it names what callers use.
"""

from ansible_collections.strata.ops.plugins.module_utils.transfer.control import (
    CONTROL_FILE_SPACE,
    RangeSet,
    discard,
    load_control,
    prepare_space,
    save_control,
    write_status,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.download import Download
from ansible_collections.strata.ops.plugins.module_utils.transfer.errors import (
    DiskSpaceError,
    IntegrityError,
    LocalWriteError,
    SourceError,
    TooSlowError,
    TransferError,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.http import (
    MIB,
    fetch_small,
    measure_speed,
    probe,
    resolve_redirect,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.scheduler import CHUNK, Scheduler
from ansible_collections.strata.ops.plugins.module_utils.transfer.verify import (
    file_sha256,
    finalize,
    parse_checksum_text,
    verify_archive,
)

__all__ = [
    "CHUNK",
    "CONTROL_FILE_SPACE",
    "MIB",
    "DiskSpaceError",
    "Download",
    "IntegrityError",
    "LocalWriteError",
    "RangeSet",
    "Scheduler",
    "SourceError",
    "TooSlowError",
    "TransferError",
    "discard",
    "fetch_small",
    "file_sha256",
    "finalize",
    "load_control",
    "measure_speed",
    "parse_checksum_text",
    "prepare_space",
    "probe",
    "resolve_redirect",
    "save_control",
    "verify_archive",
    "write_status",
]
