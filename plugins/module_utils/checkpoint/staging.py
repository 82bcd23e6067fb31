# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bind sources a restore must see through a slave view, so that runc cannot unmount the host's mounts.

While runc prepares a restore it binds every bind source recursively into the container's root
in the host's mount namespace and detaches it again. Where the source has mounts below it whose
parent is shared (every mount on a systemd host), that detach unmounts them on the host too:
measured with ``docker start --checkpoint``, a tmpfs under a HostToContainer volume's source
vanished from the host. A slave view (``mount --rbind`` then ``--make-rslave``) still receives
the host's mounts but sends nothing back.
"""

import contextlib
import os

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt

# One directory per restored container, one view per staged source inside it.
RESTORE_STAGING = "/run/strata-ops/restore"


class BindStaging:
    """``run_command(argv) -> (rc, out, err)`` mounts; ``read_mountinfo()`` reads this namespace's mounts."""

    def __init__(self, run_command, read_mountinfo=mnt.read_mountinfo, root=RESTORE_STAGING):
        self.run = run_command
        self.read_mountinfo = read_mountinfo
        self.root = root

    def plan(self, create, new_container):
        """The bind sources of a /containers/create body that need a slave view, and where."""
        host_mounts = self.read_mountinfo()
        staged = []
        for source in ctr.bind_sources(create):
            below = mnt.shared_submounts(source, host_mounts)
            if below:
                staged.append(
                    {
                        "source": source,
                        "staging": os.path.join(self.root, new_container, str(len(staged))),
                        "submounts": sorted(set(m["mount_point"] for m in below)),
                    }
                )
        return staged

    def stage(self, create, staged):
        """Make the planned views and point ``create``'s binds at them."""
        for entry in staged:
            os.makedirs(entry["staging"], exist_ok=True)
            for argv in (
                ["mount", "--rbind", entry["source"], entry["staging"]],
                ["mount", "--make-rslave", entry["staging"]],
            ):
                rc, out, err = self.run(argv)
                if rc != 0:
                    raise ctr.ContainerError(
                        f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}; nothing was restored"
                    )
            ctr.replace_bind_source(create, entry["source"], entry["staging"])

    def prune(self, container_exists):
        """Take down the views of restored containers that no longer exist."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for name in names:
            if container_exists(name):
                continue
            top = os.path.join(self.root, name)
            self.unstage([{"staging": os.path.join(top, n)} for n in os.listdir(top)])
            with contextlib.suppress(OSError):
                os.rmdir(top)

    def unstage(self, staged):
        mounted = set(m["mount_point"] for m in self.read_mountinfo())
        for entry in staged:
            if entry["staging"] in mounted:
                self.run(["umount", "-R", entry["staging"]])
            with contextlib.suppress(OSError):
                os.rmdir(entry["staging"])
