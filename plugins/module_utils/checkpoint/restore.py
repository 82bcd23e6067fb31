# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""state=restored: a Docker container dump restored into a NEW container (docker start --checkpoint)."""

import contextlib
import copy
import os
import shutil

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import (
    BadCheckpoint,
    CheckpointJob,
    leftovers,
    reopened,
    runtime_criu,
)
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import gpu as gpu_mod
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.staging import BindStaging
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.target import docker_api
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument

# Label on a restored container: the dump it came from (a rerun with the same dump is a no-op).
RESTORE_LABEL = "strata.ops.checkpoint"


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # another file system (EXDEV), or links not allowed there
        shutil.copy2(src, dst)


def check_propagated_mounts(manifest, read_mountinfo=mnt.read_mountinfo, exists=os.path.exists):
    """Mounts the host propagated into the container must be mounted on the host again first."""
    configured = manifest["target"].get("mount_points", [])
    propagated = [
        m
        for m in manifest.get("mounts", {}).get("external", [])
        if m.get("propagated") and m["mount_point"] not in configured
    ]
    mounted = set(m["mount_point"] for m in read_mountinfo()) if propagated else set()
    for mount in propagated:
        host = mount.get("host_path")
        # A whole file system must be mounted there again, not just leave its empty directory.
        present = host and (host in mounted if mount["root"] == "/" else exists(host))
        if not present:
            missing = f"nothing is mounted at {host}" if host else "the dump found no host path for it"
            raise BadCheckpoint(
                f"{mount['mount_point']} came into the container from the host by propagation "
                f"({mount['fstype']} {mount['source']}); a restore binds it from the host again, "
                f"but {missing}: mount it there first (layer 4 does for its ramdisk)"
            )


class Restorer(CheckpointJob):
    """One restore. ``run_command`` mounts and runs cuda-checkpoint; ``docker`` makes the Docker
    API client; ``staging`` is a BindStaging; ``find_freezer`` finds what thaws CUDA processes;
    ``proc`` is where containerd's processes are looked up (leftovers.py)."""

    def __init__(
        self,
        params,
        check_mode,
        run_command,
        *,
        docker=ctr.DockerAPI,
        staging=None,
        find_freezer=gpu_mod.find_freezer,
        read_mountinfo=mnt.read_mountinfo,
        gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
        proc="/proc",
    ):
        super().__init__(
            params, check_mode, run_command, docker=docker, find_freezer=find_freezer, gpus_dir=gpus_dir
        )
        self.staging = staging or BindStaging(run_command, read_mountinfo)
        self.read_mountinfo = read_mountinfo
        self.proc = proc

    def _existing(self, api, checkpoint, command, manifest):
        """The result when new_container exists: done if it runs from this dump, else a conflict."""
        p = self.p
        try:
            existing = api.inspect(p["new_container"])
        except ctr.TargetNotFound:
            return None
        labels = existing.get("Config", {}).get("Labels") or {}
        if existing["State"].get("Running") and labels.get(RESTORE_LABEL) == checkpoint:
            return {
                "changed": False,
                "command": command,
                "checkpoint_dir": checkpoint,
                "manifest": manifest,
                "restored": {
                    "container_id": existing["Id"],
                    "name": p["new_container"],
                    "pid": existing["State"]["Pid"],
                    "checkpoint": checkpoint,
                },
            }
        name = p["new_container"]
        status = existing["State"].get("Status")
        origin = f", restored from {labels[RESTORE_LABEL]}" if RESTORE_LABEL in labels else ""
        raise ctr.ContainerConflict(
            f"a container named {name} already exists ({status}{origin}): restore needs a new container. "
            f"Choose another new_container or remove it (docker rm -f {name})"
        )

    def run_state(self):
        """state=restored: the module's result."""
        p = self.p
        if not p["new_container"]:
            raise InvalidArgument("state=restored needs new_container: the name of the container to create")
        checkpoint = mf.choose(p["checkpoint"], p["images_dir"], p["name"])
        manifest = mf.load(checkpoint)
        runtime = manifest.get("target", {}).get("runtime")
        if manifest.get("method") == "containerd":
            raise BadCheckpoint(
                f"{checkpoint} was dumped by containerd (method containerd): "
                "restore it with method=containerd"
            )
        if runtime != "docker":
            raise BadCheckpoint(
                f"{checkpoint} is a dump of a {runtime} target; "
                "method=criu restores Docker container dumps only (a CRI container: dump and restore it with "
                "method=containerd)"
            )
        check_propagated_mounts(manifest, self.read_mountinfo)
        cp_name = os.path.basename(checkpoint)
        api = docker_api(p, self.docker)
        info = api.info()
        root = info.get("DockerRootDir", "/var/lib/docker")
        create = copy.deepcopy(manifest["target"]["create"])
        create["Labels"] = dict(create.get("Labels") or {}, **{RESTORE_LABEL: checkpoint})
        command = [
            f"docker create --name {p['new_container']} {create['Image']}",
            f"cp -a {checkpoint} {root}/containers/<new id>/checkpoints/{cp_name}",
            f"docker start --checkpoint {cp_name} {p['new_container']}",
        ]
        done = self._existing(api, checkpoint, command, manifest)
        if done:
            return done
        runtime_criu.refuse_unreadable(
            checkpoint, manifest, self.run, self.proc, address=None, where="dockerd's containerd's"
        )
        reopened.refuse_changed(
            checkpoint, reopened.docker_binds(create), lambda: reopened.in_dump_dir(checkpoint)
        )
        if not info.get("ExperimentalBuild"):
            raise ctr.RuntimeUnavailable(
                "dockerd runs without experimental features, so it cannot start a container from a "
                'checkpoint: start dockerd with --experimental (or "experimental": true in daemon.json)'
            )
        gpu, freezer = gpu_mod.restore_plan(
            p, self.run, manifest, checkpoint, gpus_dir=self.gpus_dir, find=self.find_freezer
        )
        staged = self.staging.plan(create, p["new_container"])
        command[0:0] = [
            f"mount --rbind {s['source']} {s['staging']} && mount --make-rslave {s['staging']}"
            for s in staged
        ]
        result = {
            "changed": True,
            "command": command,
            "checkpoint_dir": checkpoint,
            "manifest": manifest,
            "gpu": gpu,
            "staged_binds": staged,
        }
        if self.check_mode:
            return result
        result["restored"], copies = self._restore(
            api, root, create, checkpoint, manifest, staged=staged, gpu=gpu, freezer=freezer
        )
        return dict(result, **copies)

    def _container_exists(self, api):
        def exists(name):
            try:
                api.inspect(name)
            except ctr.TargetNotFound:
                return False
            return True

        return exists

    def _restore(self, api, root, create, checkpoint, manifest, *, staged, gpu, freezer):
        p = self.p
        cp_name = os.path.basename(checkpoint)
        new_id = None
        self.staging.prune(self._container_exists(api))
        try:
            self.staging.stage(create, staged)
            new_id = api.create(p["new_container"], create)["Id"]
            if not os.path.isdir(os.path.join(root, "containers", new_id)):
                raise ctr.RuntimeUnavailable(
                    f"{root}/containers/{new_id} does not exist on this host: "
                    "run the module on the Docker host, as root"
                )
            docker_copy = os.path.join(root, "containers", new_id, "checkpoints", cp_name)
            # Hard links where the dump and Docker's root share a file system: dockerd only reads them.
            shutil.copytree(checkpoint, docker_copy, symlinks=True, copy_function=_link_or_copy)
            copies = leftovers.RestoreCopies(leftovers.dir_files(checkpoint), self.proc)
            try:
                api.start(new_id, checkpoint=cp_name)
            except ctr.ContainerError as exc:
                new_container = p["new_container"]
                external_mounts = ", ".join(m["mount_point"] for m in manifest["mounts"]["external"])
                raise ctr.ContainerError(
                    f"restoring {checkpoint} into {new_container} failed: {exc}. "
                    "runc runs the criu on dockerd's PATH: it must be CRIU >= 4.0 as well; "
                    f"the new container must offer every external mount of the dump ({external_mounts})"
                ) from None
            finally:
                found = copies.result()
                # dockerd needs its copy only to start the container (a restart does not restore)
                shutil.rmtree(docker_copy, ignore_errors=True)
            doc = api.inspect(new_id)
            if freezer is not None:
                gpu_mod.after_restore(freezer, gpu, criu.process_tree(doc["State"]["Pid"]))
        except BaseException:
            if new_id:
                with contextlib.suppress(ctr.ContainerError):
                    api.remove(new_id)
            self.staging.unstage(staged)
            raise
        restored = {
            "container_id": new_id,
            "name": p["new_container"],
            "pid": doc["State"].get("Pid"),
            "running": doc["State"].get("Running"),
            "checkpoint": checkpoint,
        }
        return restored, found
