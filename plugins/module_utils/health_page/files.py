# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report directory: one <UTC stamp>/ per run, files written atomically, past runs read back."""

import contextlib
import datetime
import json
import os
import re
import tempfile

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

# 20250101T120000Z, with -2, -3 ... when two runs start in the same second.
STAMP_RE = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
FILE_MODE = 0o644
DIR_MODE = 0o755


def stamp_of(wall):
    return datetime.datetime.fromtimestamp(wall, tz=datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _stamp_key(name):
    base, _sep, suffix = name.partition("-")
    return (base, int(suffix or 1))


class ReportDirError(StrataError):
    error_kind = "report_dir"


def free_stamp(report_dir, stamp):
    """``stamp``, or stamp-N when that directory already exists."""
    name, n = stamp, 1
    while os.path.lexists(os.path.join(report_dir, name)):
        n += 1
        name = f"{stamp}-{n}"
    return name


def make_run_dir(report_dir, stamp):
    """Create report_dir (and parents) and its new run directory; (name, path)."""
    try:
        os.makedirs(report_dir, mode=DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise ReportDirError(
            f"cannot create report_dir {report_dir}: {exc.strerror}; set health_check_report_dir to a "
            "directory the controller's user can create and write",
            report_dir=report_dir,
        ) from None
    if not os.path.isdir(report_dir):
        raise ReportDirError(f"report_dir {report_dir} exists but is not a directory; choose another path")
    name = free_stamp(report_dir, stamp)
    while True:
        path = os.path.join(report_dir, name)
        try:
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)  # whatever the umask
            return name, path
        except FileExistsError:  # another run took it a moment ago
            name = free_stamp(report_dir, stamp)
        except OSError as exc:
            raise ReportDirError(
                f"cannot create {path}: {exc.strerror}; make {report_dir} writable for the controller's user",
                report_dir=report_dir,
            ) from None


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename, so
    a reader (a browser, AWX) never sees half a file; mode 0644."""
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    except OSError as exc:
        raise ReportDirError(
            f"cannot write in {directory}: {exc.strerror}; make it writable for the controller's user"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ReportDirError(
            f"cannot write {path}: {exc.strerror}; check the space and rights there"
        ) from None


def past_runs(report_dir, keep):
    """The runs under report_dir, newest first, at most ``keep``: {stamp, generated_at, problems,
    healthy, verdict}; problems is None when a run's report.json cannot be read."""
    try:
        names = [n for n in os.listdir(report_dir) if STAMP_RE.match(n)]
    except OSError:
        return []
    runs = []
    for name in sorted(names, key=_stamp_key, reverse=True):
        path = os.path.join(report_dir, name, "report.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            runs.append(
                {
                    "stamp": name,
                    "generated_at": data.get("generated_at"),
                    "problems": int(data["problems"]),
                    "healthy": bool(data.get("healthy")),
                    "verdict": data.get("verdict"),
                }
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            runs.append(
                {"stamp": name, "generated_at": None, "problems": None, "healthy": False, "verdict": None}
            )
        if len(runs) >= keep:
            break
    return runs
