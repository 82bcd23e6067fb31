# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZFS backend for strata.ops modules.

Reads the state of every requested dataset in one ``zfs get -Hp`` pass, plans the changes as
pure data (so check mode and diff are exact), then applies them either through pyzfs'
``libzfs_core`` (when it imports and a kernel ZFS answers on /dev/zfs) or the ``zfs`` CLI.

The CLI speaks two dialects:

* ``openzfs``: OpenZFS on Linux/FreeBSD; accepts ``zfs list -p`` and ``zfs set a=1 b=2 ds``.
* ``zfs-fuse``: Debian's zfs-fuse (pool v23); refuses ``zfs list -p`` and takes one
  ``property=value`` per ``zfs set``. ``zfs get -Hp`` works on both.

By concern: ``properties`` (names and values as the CLI accepts them), ``plan`` (the changes as
data), ``backend`` (the CLI in both dialects, or libzfs_core), ``ensure`` (what zfs_dataset does).
Errors derive from ``ZfsError`` (a StrataError). Commands run through a
``run_command(argv) -> (rc, stdout, stderr)`` callable, normally ``AnsibleModule.run_command``,
so everything here is testable without ZFS.
"""

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

DIALECT_OPENZFS = "openzfs"

DIALECT_ZFS_FUSE = "zfs-fuse"

WRITE_PATH_LZC = "libzfs_core"

WRITE_PATH_CLI = "cli"


class ZfsError(StrataError):
    """Base of the ZFS errors."""


class ZfsValidationError(ZfsError):
    """The request is invalid; nothing was changed."""


class ZfsCommandError(ZfsError):
    """A zfs/zpool command failed."""

    def __init__(self, msg, cmd=None, rc=None, stdout="", stderr=""):
        super().__init__(msg, cmd=cmd, rc=rc, stdout=stdout, stderr=stderr)
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
