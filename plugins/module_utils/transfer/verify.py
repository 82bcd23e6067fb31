# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a finished download (the archive's own integrity, a checksum) and its final rename."""

import hashlib
import os
import re
import shutil
import subprocess

from ansible_collections.strata.ops.plugins.module_utils.transfer.control import control_path
from ansible_collections.strata.ops.plugins.module_utils.transfer.errors import (
    IntegrityError,
    LocalWriteError,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.http import MIB


def verify_archive(path, ext, timeout=None):
    """Test the compressed stream end to end (the two formats agave reads); return how."""
    tool = {"tar.zst": "zstd", "tar.lz4": "lz4"}[ext]
    binary = shutil.which(tool)
    if binary is None:
        raise IntegrityError(
            f"cannot test {os.path.basename(path)}: the {tool} command is not installed on this host"
            " (base_system installs it), or set verify_archive=false"
        )
    proc = subprocess.run(
        [binary, "-t", "-q", path],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise IntegrityError(f"{os.path.basename(path)} failed the {tool} -t integrity test: {stderr}")
    return f"{tool} -t"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_checksum_text(text, name):
    """A sha256 from a ``sha256sum``-style text (``<hex>  <name>`` lines, or a bare hex)."""
    for line in (text or "").splitlines():
        fields = line.strip().split()
        if not fields or not re.match(r"^[0-9a-fA-F]{64}$", fields[0]):
            continue
        if len(fields) == 1 or fields[-1].lstrip("*") == name:
            return fields[0].lower()
    return None


def finalize(tmp_path, final_path):
    """Rename the verified temporary file to its final name, atomically, and sync the directory."""
    try:
        os.rename(tmp_path, final_path)
    except OSError as exc:
        reason = exc.strerror or exc
        raise LocalWriteError(
            f"cannot rename the verified download {tmp_path} to {final_path} ({reason}):"
            " it stays under its temporary name"
        ) from None
    try:
        dir_fd = os.open(os.path.dirname(final_path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    for path in (control_path(tmp_path), control_path(tmp_path) + ".new"):
        if os.path.exists(path):
            os.unlink(path)
