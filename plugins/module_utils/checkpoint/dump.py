# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""state=dumped: plan a ``criu dump`` from facts read on the host, run it, write the manifest."""

import json
import os
import shutil
import time

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import CheckpointJob, writeback
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import gpu as gpu_mod
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.target import default_name, find_target
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, utc_iso


def _restore_binds(create, external, configured):
    """The mounts the host propagated into the container after it started (a tmpfs mounted on
    the host under a HostToContainer volume) are in no container config: the new container gets
    them as binds of the same host paths, so that runc hands them to CRIU on restore."""
    extra = [
        {
            "Type": "bind",
            "Source": m["host_path"],
            "Target": m["mount_point"],
            "BindOptions": {"Propagation": "rslave"},
        }
        for m in external
        if m.get("propagated") and m.get("host_path") and m["mount_point"] not in configured
    ]
    if extra:
        host = create.setdefault("HostConfig", {})
        host["Mounts"] = list(host.get("Mounts") or []) + extra


def _read_text(path):
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _netns(pid):
    """The target's network namespace inode when it differs from ours, else None."""
    try:
        netns = os.readlink(f"/proc/{pid}/ns/net")
        own = os.readlink("/proc/self/ns/net")
    except OSError:
        return None
    return netns.split("[")[-1].rstrip("]") if netns != own else None


# A final dump that still writes more than this share of the pages it scanned saved little by its
# pre-dumps (measured: 5 % hot memory in 2 MiB blocks -> 5 %; one byte in every 20th 4 KiB page
# under transparent huge pages -> 99-100 %, frozen 1-2x a plain dump: bench/bench_predump.py).
PRE_DUMP_LITTLE_SAVED = 0.5


def pre_dump_warnings(stats, pre_dumps):
    """A warning when the pre-dumps did not spare the final dump most of the memory."""
    scanned, written = stats.get("pages_scanned"), stats.get("pages_written")
    if not pre_dumps or not scanned or written is None or written / scanned <= PRE_DUMP_LITTLE_SAVED:
        return []
    return [
        f"the pre-dumps saved little: the final dump still wrote {written} of the {scanned} pages it "
        f"scanned ({written / scanned:.0%}) while the process was frozen ({stats.get('frozen_s')} s). "
        "The process rewrote most of its memory while the pre-dumps copied it, or its writes are spread "
        "over transparent huge pages, whose dirtiness the kernel tracks per 2 MiB page "
        "(/sys/kernel/mm/transparent_hugepage/enabled). More pre_dumps will not help such a process; "
        "pre_dumps: 0 saves their time"
    ]


class Dumper(CheckpointJob):
    """One dump. ``run_command(argv, environ_update=None) -> (rc, out, err)`` runs criu, crictl and
    cuda-checkpoint; ``docker`` makes a Docker API client from a socket path; ``find_freezer``
    finds what freezes CUDA processes (gpu.find_freezer); ``clock`` times the dump."""

    def __init__(
        self,
        params,
        check_mode,
        run_command,
        *,
        docker=ctr.DockerAPI,
        find_freezer=gpu_mod.find_freezer,
        clock=time.monotonic,
        gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    ):
        super().__init__(
            params, check_mode, run_command, docker=docker, find_freezer=find_freezer, gpus_dir=gpus_dir
        )
        self.clock = clock

    def plan(self):
        p = self.p
        if not p["images_dir"]:
            raise InvalidArgument("images_dir is required to write a dump")
        mf.check_images_dir(p["images_dir"])
        binary = criu.locate(p["criu_path"])
        version = criu.check_version(self.run, binary)
        target = find_target(p, self.run, self.docker)
        pid = target["pid"]
        try:
            mounts = mnt.read_mountinfo(f"/proc/{pid}/mountinfo")
        except OSError as exc:
            raise criu.TargetGone(
                f"cannot read /proc/{pid}/mountinfo: {exc} (did the process exit?)"
            ) from None
        root, internal, external = criu.classify_mounts(mounts)
        if any(m.get("propagated") for m in external):
            host_mounts = mnt.read_mountinfo()
            for mount in external:
                if mount.get("propagated"):
                    mount["host_path"] = criu.host_path(mount, host_mounts)
            if target["runtime"] == "docker":
                _restore_binds(target["create"], external, target["mount_points"])
        tree = criu.process_tree(pid)
        inode = _netns(pid)
        gpu, freezer = gpu_mod.dump_plan(p, self.run, tree, gpus_dir=self.gpus_dir, find=self.find_freezer)
        name = default_name(p, target)
        dump_dir = os.path.join(p["images_dir"], f"{name}-{mf.stamp()}")
        if p["pre_dumps"]:
            self._check_pre_dump(binary, gpu)
        common = {
            "manage_cgroups": p["manage_cgroups"],
            "tcp_established": p["tcp_established"],
            # Docker recreates the network namespace itself on restore (as docker checkpoint
            # does: empty netns); runc under CRI joins the pod's netns by runc's key.
            "empty_netns": inode is not None and target["runtime"] == "docker",
            "netns_inode": inode if target["runtime"] != "docker" else None,
            "plugin_dir": p["criu_plugin_dir"] if gpu["path"] == "criu-cuda-plugin" else None,
        }
        external_args = criu.external_mount_args(external, p["external_mounts"], version)
        # Pre-dumps go to pre-1 .. pre-N inside the dump directory, each naming the one before;
        # the final dump names pre-N, and CRIU follows the chain of "parent" links on restore.
        pre_argvs = [
            criu.build_dump_args(
                binary,
                pid,
                os.path.join(dump_dir, f"pre-{n}"),
                external_args,
                pre_dump=True,
                prev_images_dir=f"../pre-{n - 1}" if n > 1 else None,
                log_file="pre-dump.log",
                **common,
            )
            for n in range(1, p["pre_dumps"] + 1)
        ]
        argv = criu.build_dump_args(
            binary,
            pid,
            dump_dir,
            external_args,
            leave_running=p["leave_running"],
            prev_images_dir=f"pre-{p['pre_dumps']}" if p["pre_dumps"] else None,
            **common,
        )
        env = None
        if gpu["path"] == "criu-cuda-plugin":
            # The plugin runs cuda-checkpoint by name: the one found here must come first on PATH.
            env = {"PATH": os.path.dirname(freezer.path) + os.pathsep + os.environ.get("PATH", "")}
        return {
            "binary": binary,
            "version": version,
            "target": target,
            "name": name,
            "dump_dir": dump_dir,
            "argv": argv,
            "pre_argvs": pre_argvs,
            "env": env,
            "tree": tree,
            "mounts": {
                "root": mf.mount_view(root) if root else None,
                "external": [mf.mount_view(m) for m in external],
                "internal": [mf.mount_view(m) for m in internal],
            },
            "gpu": gpu,
            "freezer": freezer,
            "rss_bytes": criu.rss_bytes(tree),
        }

    def _check_pre_dump(self, binary, gpu):
        """Pre-dumps need CRIU's memory tracking; CUDA state reaches host memory only when the
        process is locked, so pre-dumping a CUDA process copies pages that all change again."""
        if gpu["cuda_pids"]:
            raise criu.PreDumpUnsupported(
                f"pre_dumps with CUDA processes ({gpu['cuda_pids']}): their GPU memory is copied into "
                "host memory only when they are locked for the final dump, so a pre-dump saves nothing. "
                "Set pre_dumps: 0 for GPU workloads"
            )
        criu.check_dirty_tracking(self.run, binary)

    def _pre_dump(self, plan):
        """Run the pre-dumps (the tree keeps running); their wall times in seconds."""
        times = []
        for argv in plan.get("pre_argvs", ()):
            images_dir = argv[argv.index("--images-dir") + 1]
            os.makedirs(images_dir)
            started = self.clock()
            rc, _out, err = self.run(argv, environ_update=plan["env"])
            if rc != 0:
                log = os.path.join(images_dir, "pre-dump.log")
                raise criu.CriuDumpFailed(
                    f"criu pre-dump of PID {plan['target']['pid']} failed (rc={rc}); nothing was frozen "
                    f"for long and the process runs on. CRIU log ({log}):\n{criu.log_tail(log) or err}"
                )
            times.append(round(self.clock() - started, 3))
        return times

    def _failure(self, plan, rc, err):
        """The typed error for a failed criu dump, with CRIU's own words."""
        p, pid = self.p, plan["target"]["pid"]
        log = os.path.join(plan["dump_dir"], "dump.log")
        tail = criu.log_tail(log)
        error = criu.classify_dump_failure(tail + _read_text(log), err, criu.alive(pid))
        if error is criu.NoSpace:
            return error(
                f"criu dump ran out of space in {p['images_dir']}: free space there or point images_dir "
                f"at a larger file system (CRIU: {tail.splitlines()[-1:] or err})"
            )
        if error is criu.TargetGone:
            return error(
                f"process {pid} (or one of its descendants) exited during the dump (criu rc={rc}); nothing "
                f"usable was written. Re-run when the workload is up. CRIU log: {tail or err}"
            )
        return error(f"criu dump of PID {pid} failed (rc={rc}). CRIU log ({log}):\n{tail or err}")

    def dump(self, plan):
        """Run criu (with the GPU steps around it); returns the wall time in seconds."""
        dump_dir, pid = plan["dump_dir"], plan["target"]["pid"]
        gpu, freezer = plan["gpu"], plan["freezer"]
        locked_at = None
        mf.start(dump_dir)
        started = self.clock()
        try:
            with open(os.path.join(dump_dir, "descriptors.json"), "w") as handle:
                json.dump(criu.descriptors(pid), handle)  # what runc restore expects
            with writeback.Writeback(dump_dir):  # the images go to the disk while CRIU writes them
                plan["pre_dump_s"] = self._pre_dump(plan)
                if gpu["taken"]:
                    gpu_mod.step(freezer, gpu, label="before dump")
                if gpu_mod.drives(gpu):
                    locked_at = self.clock()
                    gpu_mod.lock_and_checkpoint(freezer, gpu, self.p["cuda_lock_timeout"])
                rc, _out, err = self.run(plan["argv"], environ_update=plan["env"])
                wall = self.clock() - started
            if rc != 0:
                raise self._failure(plan, rc, err)
        except BaseException as exc:
            shutil.rmtree(dump_dir, ignore_errors=True)
            if locked_at is not None and criu.alive(pid):
                gpu_mod.thaw_after_failure(freezer, gpu, exc)
            raise
        if locked_at is not None and self.p["leave_running"] and criu.alive(pid):
            gpu_mod.thaw(freezer, gpu)
            gpu["locked_s"] = round(self.clock() - locked_at, 3)
        elif gpu["path"] == "criu-cuda-plugin" and criu.alive(pid):
            gpu_mod.step(freezer, gpu, label="after dump (plugin)")
        return wall

    def check_images(self, plan):
        """Decode the stats and the image set with crit; a plugin dump without the plugin is removed."""
        dump_dir = plan["dump_dir"]
        crit = self.p["crit_path"] or criu.find_executable("crit")
        stats, source, check = criu.read_stats(self.run, dump_dir, crit)
        try:
            crit_check = criu.crit_check_images(self.run, crit, dump_dir)
            plugin_ran = gpu_mod.CUDA_PLUGIN_NAME in crit_check.get("plugins", [])
            if plan["gpu"]["path"] == "criu-cuda-plugin" and crit_check["checked"] and not plugin_ran:
                raise criu.GpuError(
                    f"CRIU's CUDA plugin did not record itself in {dump_dir}/inventory.img "
                    f"(plugins: {crit_check['plugins']}): it turned itself off, so the dump lacks the GPU "
                    "state and was removed. See the cuda_plugin lines of dump.log; the plugin needs "
                    f"{gpu_mod.NVIDIA_GPUS_DIR} and cuda-checkpoint on PATH"
                )
        except criu.CriuError:
            shutil.rmtree(dump_dir, ignore_errors=True)
            raise
        return stats, source, check, crit_check

    def manifest(self, plan, wall, images):
        """The manifest.json of a finished dump; ``images`` is what check_images read."""
        stats, source, check, crit_check = images
        p, dump_dir, target = self.p, plan["dump_dir"], dict(plan["target"])
        names = os.listdir(dump_dir)
        sizes = {
            "images_bytes": criu.dir_size(dump_dir),
            "files": len(names),
            "pages_bytes": sum(
                os.path.getsize(os.path.join(dump_dir, f)) for f in names if f.startswith("pages-")
            ),
        }
        return {
            "format": 1,
            "created": utc_iso(),
            "name": plan["name"],
            "target": target,
            "pod": {"name": p["pod"], "namespace": p["namespace"], "container": p["container"]}
            if p["pod"]
            else None,
            "pid": target["pid"],
            "tree": plan["tree"],
            "rss_bytes": plan["rss_bytes"],
            "container_id": target.get("container_id"),
            "image": target.get("image"),
            "image_id": target.get("image_id"),
            "mounts": plan["mounts"],
            "criu": {
                "path": plan["binary"],
                "version": criu.version_string(plan["version"]),
                "options": plan["argv"][1:],
            },
            "leave_running": p["leave_running"],
            "pre_dumps": [
                {"command": argv, "wall_s": wall_s}
                for argv, wall_s in zip(plan.get("pre_argvs", ()), plan.get("pre_dump_s", ()))
            ],
            "gpu": plan["gpu"],
            "sizes": sizes,
            "dump_wall_s": round(wall, 3),
            "stats": criu.summarize_dump_stats(stats),
            "stats_raw": stats.get("dump", {}),
            "stats_source": source,
            "stats_check": check,
            "crit_check": crit_check,
        }

    def run_state(self):
        """state=dumped: the module's result."""
        plan = self.plan()
        result = {
            "changed": True,
            "command": plan["argv"],
            "checkpoint_dir": plan["dump_dir"],
            "gpu": plan["gpu"],
        }
        if plan["pre_argvs"]:
            result["pre_dump_commands"] = plan["pre_argvs"]
        if self.check_mode:
            result["pruned"] = []
            commands = [" ".join(argv) for argv in plan["pre_argvs"] + [plan["argv"]]]
            result["msg"] = f"check mode: would run {'; then '.join(commands)}"
            return result
        mf.make_images_dir(self.p["images_dir"])
        abandoned = mf.remove_abandoned(self.p["images_dir"], plan["name"])  # before the space check
        mf.check_free_space(self.p["images_dir"], plan["tree"])
        wall = self.dump(plan)
        manifest = self.manifest(plan, wall, self.check_images(plan))
        # On the disk before the manifest says the dump is complete and before an older dump goes.
        manifest["durable_s"] = round(writeback.make_durable(plan["dump_dir"], self.clock)[0], 3)
        mf.finish(plan["dump_dir"], manifest)
        pruned = mf.prune(self.p["images_dir"], plan["name"], self.p["keep"], plan["dump_dir"])
        result.update(manifest=manifest, pruned=pruned, frozen_s=manifest["stats"]["frozen_s"])
        result["abandoned_removed"] = abandoned
        result["warnings"] = pre_dump_warnings(manifest["stats"], self.p["pre_dumps"])
        return result
