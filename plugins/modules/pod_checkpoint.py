#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pod_checkpoint
short_description: Checkpoint a pod's container (or a process) with CRIU and restore it into a new container
version_added: "0.1.0"
description:
  - C(state=dumped) finds the target, builds the C(criu dump) options from facts read on the
    host and writes the images into a dated directory C(images_dir/NAME-YYYYmmddTHHMMSS.mmmZ)
    with a C(manifest.json), then removes the oldest dumps of the same NAME beyond O(keep).
  - The target is a Kubernetes container given by O(pod), O(namespace) and O(container)
    (found with C(crictl) when installed, else among Docker containers by the labels the
    kubelet sets, C(io.kubernetes.pod.name), C(io.kubernetes.pod.namespace),
    C(io.kubernetes.container.name)), a plain Docker container given by O(container) alone,
    or a host process given by O(pid).
  - "Options come from facts: external mounts from C(/proc/PID/mountinfo) (each becomes
    C(--external mnt[PATH]:PATH), the key runc uses on restore, or CRIU's autodetection with
    O(external_mounts=auto)), C(--manage-cgroups), C(--leave-running) unless
    O(leave_running=false), C(--tcp-established) when asked, the container's network namespace
    as runc treats it, and C(--libdir) when a CUDA process is dumped with CRIU's CUDA plugin."
  - "GPU: when an NVIDIA GPU is present (C(/proc/driver/nvidia/gpus), what the plugin checks)
    and a process of the tree uses CUDA, CRIU's CUDA plugin (C(cuda_plugin.so) in
    O(criu_plugin_dir)) drives C(cuda-checkpoint) itself; only when the plugin is missing does
    this module call C(cuda-checkpoint) (lock, checkpoint, dump, restore, unlock). Both need
    C(cuda-checkpoint) with C(--action) (driver r555+): the plugin runs it from PATH (the one
    found here is put first) and turns itself off without it, so the module refuses instead of
    writing a dump without the GPU state, and checks with C(crit) that the plugin recorded
    itself in C(inventory.img). The C(gpu) result says which path was taken and why, with the
    CUDA state at each step; without a GPU it says plainly that the GPU path was not taken."
  - The manifest records the target, PID and process tree, container id and image, mounts,
    the CRIU version and full command, image sizes, and CRIU's own timings and pages written
    from C(stats-dump), decoded with C(crit) when it is installed (cross-checked with a
    built-in reader, which is used alone otherwise). C(crit) also checks C(pstree.img).
  - C(state=restored) restores a dump of a Docker container into a NEW container O(new_container)
    created from the same image with the same mounts (the dump directory is copied into the new
    container's C(checkpoints/) and the container is started from it, as
    C(docker start --checkpoint) does; Docker 20.10 refuses a custom checkpoint directory) and
    reports the restored process's host PID. A dump with CUDA state is restored only on a host
    with a GPU and C(cuda-checkpoint) (and the plugin, for a plugin dump); after a dump taken by
    C(cuda-checkpoint) directly, the module restores and unlocks the CUDA processes itself.
  - O(method=kubelet) asks the kubelet's checkpoint API (C(POST /checkpoint/NS/POD/CONTAINER),
    Kubernetes 1.25+ with the C(ContainerCheckpoint) feature) instead of running CRIU here.
  - Docker is reached through its HTTP API on the unix socket with the Python standard library
    (no Docker SDK or CLI needed on the host).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Resolves the target and returns the exact command it would run (C(command)); writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: linux
    support: full
    details: Linux hosts only (CRIU, /proc).
options:
  state:
    description:
      - V(dumped) writes a new checkpoint; V(restored) restores one into O(new_container).
    type: str
    choices: [dumped, restored]
    default: dumped
  method:
    description:
      - V(criu) runs CRIU on this host; V(kubelet) calls the kubelet checkpoint API (O(kubelet_url)).
    type: str
    choices: [criu, kubelet]
    default: criu
  pod:
    description: Pod name; the target is that pod's container (see O(container)).
    type: str
  namespace:
    description: Namespace of O(pod).
    type: str
    default: default
  container:
    description:
      - With O(pod), the container name inside the pod (needed when the pod has several).
      - Without O(pod), a Docker container name or id.
    type: str
  pid:
    description:
      - A host process to dump with its descendants instead of a container. Not restorable
        with O(state=restored), which needs a container dump.
    type: int
  runtime:
    description:
      - How containers are found. V(auto) uses C(crictl) when O(pod) is set and crictl is
        installed, else Docker.
    type: str
    choices: [auto, docker, cri]
    default: auto
  cri_endpoint:
    description:
      - The CRI runtime endpoint crictl talks to (C(crictl --runtime-endpoint)), for example
        C(unix:///run/k3s/containerd/containerd.sock) on k3s or
        C(unix:///var/snap/microk8s/common/run/containerd.sock) on MicroK8s.
      - Default crictl's own choice (C(/etc/crictl.yaml), C(CONTAINER_RUNTIME_ENDPOINT), its built-in list).
    type: str
  docker_socket:
    description: Docker API unix socket.
    type: path
    default: /var/run/docker.sock
  images_dir:
    description:
      - Directory that holds the dated dump directories. Created when missing.
      - Required for O(method=criu), and with O(state=restored) unless O(checkpoint) is given.
    type: path
  name:
    description:
      - Prefix of the dump directories; defaults to the container name, C(POD-CONTAINER) or C(pid-PID).
      - With O(state=restored) and no O(checkpoint), the newest dump of this name is restored.
    type: str
  keep:
    description: How many dumps of O(name) to keep; older ones are removed after a successful dump.
    type: int
    default: 3
  leave_running:
    description: Leave the target running after the dump (C(--leave-running)).
    type: bool
    default: true
  tcp_established:
    description: Dump established TCP connections (C(--tcp-established)).
    type: bool
    default: false
  manage_cgroups:
    description: Dump and restore the cgroup properties (C(--manage-cgroups)).
    type: bool
    default: true
  external_mounts:
    description:
      - V(facts) declares every external mount found in C(/proc/PID/mountinfo) as
        C(--external mnt[PATH]:PATH) (restorable by runc / Docker into a new container).
      - V(auto) uses CRIU's autodetection C(--external mnt[]) instead.
    type: str
    choices: [facts, auto]
    default: facts
  criu_path:
    description: The C(criu) binary (CRIU 4.0 or newer); default the first C(criu) on PATH.
    type: path
  crit_path:
    description:
      - The C(crit) tool; default the first C(crit) on PATH.
      - Without it a built-in reader decodes C(stats-dump).
    type: path
  criu_plugin_dir:
    description:
      - Directory of CRIU plugins (C(cuda_plugin.so)); passed as C(--libdir) when a CUDA process is dumped.
    type: path
    default: /usr/lib/criu
  cuda_checkpoint_path:
    description: NVIDIA's C(cuda-checkpoint); default the first on PATH. Used only without the CUDA plugin.
    type: path
  timeout:
    description: Seconds to wait for the kubelet checkpoint API (O(method=kubelet)).
    type: int
    default: 600
  checkpoint:
    description:
      - With O(state=restored), the dump directory to restore.
      - Default the newest dump of O(name) in O(images_dir).
    type: path
  new_container:
    description:
      - With O(state=restored), the name of the new container. It must not exist yet; a running
        container of that name restored from the same checkpoint counts as done (changed=false).
    type: str
  kubelet_url:
    description: Kubelet base URL for O(method=kubelet), for example C(https://node1:10250).
    type: str
  kubelet_token:
    description: Bearer token allowed to C(create) C(nodes/checkpoint).
    type: str
  kubelet_ca_path:
    description: CA bundle that signed the kubelet's serving certificate.
    type: path
  validate_certs:
    description: Verify the kubelet's certificate.
    type: bool
    default: true
notes:
  - Runs on the host that runs the container, as root (CRIU needs CAP_SYS_ADMIN and ptrace).
  - Restore needs Docker started with C(--experimental) and C(criu) 4.x on dockerd's PATH (runc runs it).
    The new container gets the original's image, command, environment and mounts; files written
    into the original's writable layer are not copied, so keep state the process needs on mounts.
  - Dumps are full dumps; CRIU's memory tracking (pre-dump) is not used.
  - Mounts the host propagated into the container after it started (a tmpfs mounted on the host
    under a HostToContainer volume, as layer 4's ramdisk is) are declared external, not copied
    into the dump; the restored container binds them from the same host paths, which must be
    mounted again first.
  - "runc unmounts, on the host, the mounts below a bind source whose parent is shared (every
    mount on a systemd host) while it prepares a restore. The module therefore binds such a
    source through a slave view under C(/run/strata-ops/restore/NEW_CONTAINER/) (C(staged_binds)
    in the result); the view stays while the container may be restarted and is taken down by a
    later restore once the container is gone (or with C(umount -R))."
requirements:
  - CRIU >= 4.0 on the host (C(criu check) must pass)
seealso:
  - name: CRIU external mounts
    description: How CRIU treats bind mounts from outside the dumped namespace.
    link: https://criu.org/External_bind_mounts
"""

EXAMPLES = r"""
- name: Checkpoint the training container of a pod, leaving it running
  strata.ops.pod_checkpoint:
    pod: pytorch-stress
    namespace: kybernate-system
    container: pytorch
    images_dir: /srv/checkpoints
    keep: 5
  register: ckpt

- name: Show what the GPU path did
  ansible.builtin.debug:
    msg: "{{ ckpt.gpu.path }}: {{ ckpt.gpu.reason }} ({{ ckpt.manifest.stats.frozen_time_us }} us frozen)"

- name: Restore the newest dump into a new container
  strata.ops.pod_checkpoint:
    state: restored
    images_dir: /srv/checkpoints
    name: kybernate-system-pytorch-stress-pytorch
    new_container: pytorch-restored
  register: restored

- name: Checkpoint through the kubelet API (run on the controller)
  strata.ops.pod_checkpoint:
    method: kubelet
    kubelet_url: https://node1:10250
    kubelet_token: "{{ lookup('ansible.builtin.file', 'checkpoint.token') }}"
    kubelet_ca_path: /etc/kubernetes/pki/ca.crt
    pod: pytorch-stress
    namespace: kybernate-system
    container: pytorch
  delegate_to: localhost

- name: Print the command a dump would run
  strata.ops.pod_checkpoint:
    container: my-app
    images_dir: /srv/checkpoints
  check_mode: true
  register: plan
"""

RETURN = r"""
command:
  description: The command run (or, in check mode, the command that would run), as a list.
  returned: always
  type: list
  elements: str
  sample: [criu, dump, --tree, "4242", --images-dir, /srv/checkpoints/app-20250101T000000.000Z]
checkpoint_dir:
  description: The dump directory written (state=dumped) or restored from (state=restored).
  returned: success
  type: str
manifest:
  description:
    - The content of C(manifest.json) (state=dumped, method=criu), or of the dump restored.
    - Keys include C(target), C(pid), C(tree), C(mounts), C(criu) (path, version, options),
      C(gpu), C(sizes), C(stats) (freezing/frozen/memdump/memwrite times in microseconds and
      pages written), C(stats_source), C(stats_check) and C(crit_check) (C(crit) read
      C(pstree.img) and C(inventory.img); C(plugins) lists the CRIU plugins the restore needs).
  returned: success and not check mode
  type: dict
gpu:
  description:
    - Whether the GPU path was taken (C(taken)), which one (C(path) is C(criu-cuda-plugin),
      C(cuda-checkpoint) or C(none)), why (C(reason)), the CUDA processes (C(cuda_pids)) and
      the CUDA state at each step (C(states)).
    - With O(state=restored), the same for the restore (C(path) is the dump's).
  returned: method=criu
  type: dict
  sample: {"taken": false, "path": "none", "states": [], "cuda_pids": [],
           "reason": "no NVIDIA GPU on this host (no /proc/driver/nvidia/gpus): the GPU path was not taken"}
staged_binds:
  description:
    - With O(state=restored), the bind sources bound through a slave view (C(source), C(staging))
      because they have mounts below them (C(submounts)) that runc would unmount on the host.
  returned: state=restored
  type: list
  elements: dict
pruned:
  description: Older dump directories removed because of O(keep).
  returned: state=dumped
  type: list
  elements: str
restored:
  description: The new container (C(container_id), C(name), C(pid) on the host, C(checkpoint)).
  returned: state=restored and not check mode
  type: dict
kubelet:
  description: The kubelet's answer (C(items) lists the checkpoint archives on the node).
  returned: method=kubelet
  type: dict
"""

import contextlib
import copy
import datetime
import json
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt

MANIFEST = "manifest.json"
# Slave views of shared bind sources that a restore binds from (see Checkpointer.stage_binds).
RESTORE_STAGING = "/run/strata-ops/restore"
CUDA_PLUGIN = "cuda_plugin.so"
RESTORE_LABEL = "strata.ops.checkpoint"


class ModuleError(Exception):
    """Bad input found by the module itself."""


def _stamp():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + "%03dZ" % (now.microsecond // 1000)


def _dumps_of(images_dir, name):
    """Dump directories of ``name`` in images_dir (those with a manifest), oldest first."""
    try:
        entries = os.listdir(images_dir)
    except OSError:
        return []
    prefix = name + "-"
    found = [
        os.path.join(images_dir, e)
        for e in entries
        if e.startswith(prefix)
        and e[len(prefix) :][:1].isdigit()
        and os.path.isfile(os.path.join(images_dir, e, MANIFEST))
    ]
    return sorted(found)


def _mount_view(mount):
    view = dict((k, mount[k]) for k in ("mount_point", "fstype", "source", "root"))
    if mount.get("propagated"):
        view.update(propagated=True, host_path=mount.get("host_path"))
    return view


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


class Checkpointer:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.run = module.run_command  # argv -> (rc, out, err)

    # ---- target -----------------------------------------------------------------------------
    def target(self):
        p = self.p
        if p["pid"] is not None:
            if not criu.alive(p["pid"]):
                raise criu.TargetGone("process %s does not exist (or is a zombie)" % p["pid"])
            return {"runtime": "process", "pid": p["pid"], "container_id": None, "image": None}
        crictl = criu.find_executable("crictl")
        if p["pod"] and (p["runtime"] == "cri" or (p["runtime"] == "auto" and crictl)):
            if not crictl:
                raise ctr.RuntimeUnavailable("runtime=cri but crictl is not installed on this host")
            argv = [crictl] + (["--runtime-endpoint", p["cri_endpoint"]] if p["cri_endpoint"] else [])
            return ctr.crictl_target(self.run, argv, p["pod"], p["namespace"], p["container"])
        api = self.docker()
        return ctr.docker_target(ctr.find_docker_container(api, p["pod"], p["namespace"], p["container"]))

    def docker(self):
        if not os.path.exists(self.p["docker_socket"]):
            raise ctr.RuntimeUnavailable(
                "Docker socket %s does not exist (is dockerd running?)%s"
                % (
                    self.p["docker_socket"],
                    "" if criu.find_executable("crictl") else "; crictl is not installed either",
                )
            )
        return ctr.DockerAPI(self.p["docker_socket"])

    def default_name(self, target):
        p = self.p
        if p["name"]:
            return p["name"]
        if p["pod"]:
            return "-".join(x for x in (p["namespace"], p["pod"], p["container"]) if x)
        if target.get("container_name"):
            return target["container_name"]
        return "pid-%s" % target["pid"]

    def criu_binary(self):
        path = self.p["criu_path"] or criu.find_executable("criu", extra_dirs=("/usr/sbin", "/sbin"))
        if not path or not os.path.exists(path):
            raise criu.CriuNotFound(
                "criu not found%s: install CRIU >= %s (Debian trixie's criu package) or set criu_path"
                % (" at %s" % path if path else " on PATH", criu.version_string(criu.MIN_VERSION))
            )
        return path

    # ---- dump -------------------------------------------------------------------------------
    def plan_dump(self):
        p = self.p
        if not p["images_dir"]:
            raise ModuleError("images_dir is required to write a dump")
        binary = self.criu_binary()
        version = criu.check_version(self.run, binary)
        target = self.target()
        pid = target["pid"]
        try:
            with open("/proc/%d/mountinfo" % pid) as handle:
                mounts = mnt.parse_mountinfo(handle.read())
        except OSError as exc:
            raise criu.TargetGone(
                "cannot read /proc/%d/mountinfo: %s (did the process exit?)" % (pid, exc)
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
        netns = own_netns = None
        try:
            netns = os.readlink("/proc/%d/ns/net" % pid)
            own_netns = os.readlink("/proc/self/ns/net")
        except OSError:
            pass
        separate_netns = netns is not None and netns != own_netns
        inode = netns.split("[")[-1].rstrip("]") if separate_netns else None
        gpu, cuda_checkpoint = self.gpu_facts(tree)
        name = self.default_name(target)
        dump_dir = os.path.join(p["images_dir"], "%s-%s" % (name, _stamp()))
        argv = criu.build_dump_args(
            binary,
            pid,
            dump_dir,
            criu.external_mount_args(external, p["external_mounts"], version),
            leave_running=p["leave_running"],
            manage_cgroups=p["manage_cgroups"],
            tcp_established=p["tcp_established"],
            # Docker recreates the network namespace itself on restore (as docker checkpoint
            # does: empty netns); runc under CRI joins the pod's netns by runc's key.
            empty_netns=separate_netns and target["runtime"] == "docker",
            netns_inode=inode if target["runtime"] != "docker" else None,
            plugin_dir=p["criu_plugin_dir"] if gpu["path"] == "criu-cuda-plugin" else None,
        )
        env = None
        if gpu["path"] == "criu-cuda-plugin":
            # The plugin runs cuda-checkpoint by name: the one found here must come first on PATH.
            env = {"PATH": os.path.dirname(cuda_checkpoint) + os.pathsep + os.environ.get("PATH", "")}
        return {
            "binary": binary,
            "version": version,
            "target": target,
            "name": name,
            "dump_dir": dump_dir,
            "argv": argv,
            "env": env,
            "tree": tree,
            "mounts": {
                "root": _mount_view(root) if root else None,
                "external": [_mount_view(m) for m in external],
                "internal": [_mount_view(m) for m in internal],
            },
            "gpu": gpu,
            "cuda_checkpoint": cuda_checkpoint,
            "rss_bytes": criu.rss_bytes(tree),
        }

    def cuda_checkpoint(self):
        """cuda_checkpoint_path or the first cuda-checkpoint on PATH; None when there is none."""
        path = self.p["cuda_checkpoint_path"] or criu.find_executable("cuda-checkpoint")
        return path if path and os.path.isfile(path) else None

    def cuda_plugin(self):
        """CRIU's CUDA plugin in criu_plugin_dir; None when it is not installed."""
        path = os.path.join(self.p["criu_plugin_dir"], CUDA_PLUGIN)
        return path if os.path.isfile(path) else None

    def gpu_facts(self, tree):
        """The GPU plan for a process tree (see criu.gpu_plan) and the cuda-checkpoint to use."""
        nvidia = criu.nvidia_gpu_present()
        cuda_pids = criu.cuda_pids_of(tree)
        plugin = self.cuda_plugin()
        cuda_checkpoint = self.cuda_checkpoint()
        has_action = True
        if nvidia and cuda_pids and cuda_checkpoint:
            has_action = criu.cuda_checkpoint_has_action(self.run, cuda_checkpoint)
        gpu = criu.gpu_plan(nvidia, cuda_pids, plugin, cuda_checkpoint, has_action)
        gpu["states"] = []
        gpu["cuda_pids"] = cuda_pids
        return gpu, cuda_checkpoint

    def _cuda_step(self, plan, action=None, label=None):
        """Run one cuda-checkpoint action (or none) on every CUDA process, then record its state."""
        gpu = plan["gpu"]
        for cpid in gpu["cuda_pids"]:
            if action:
                criu.cuda_action(self.run, plan["cuda_checkpoint"], cpid, action)
            if plan["cuda_checkpoint"]:
                gpu["states"].append(
                    {
                        "step": action or label,
                        "pid": cpid,
                        "state": criu.cuda_state(self.run, plan["cuda_checkpoint"], cpid),
                    }
                )

    def dump(self, plan):
        p = self.p
        dump_dir = plan["dump_dir"]
        pid = plan["target"]["pid"]
        os.makedirs(p["images_dir"], exist_ok=True)
        vfs = os.statvfs(p["images_dir"])
        free = vfs.f_bavail * vfs.f_frsize
        if free < plan["rss_bytes"]:
            raise criu.NoSpace(
                "%s has %d bytes free but the process tree's resident memory is %d bytes (the dump "
                "is about that size): free space there or point images_dir at a larger file system"
                % (p["images_dir"], free, plan["rss_bytes"])
            )
        os.makedirs(dump_dir)
        gpu = plan["gpu"]
        direct_cuda = gpu["path"] == "cuda-checkpoint"
        locked = False
        started = time.time()
        try:
            with open(os.path.join(dump_dir, "descriptors.json"), "w") as handle:
                json.dump(criu.descriptors(pid), handle)  # what runc restore expects
            if gpu["taken"]:
                self._cuda_step(plan, label="before dump")
            if direct_cuda:
                self._cuda_step(plan, "lock")
                locked = True
                self._cuda_step(plan, "checkpoint")
            rc, _out, err = self.module.run_command(plan["argv"], environ_update=plan["env"])
            wall = time.time() - started
            if rc != 0:
                log = os.path.join(dump_dir, "dump.log")
                tail = criu.log_tail(log)
                error = criu.classify_dump_failure(tail + open_text(log), err, criu.alive(pid))
                if error is criu.NoSpace:
                    msg = (
                        "criu dump ran out of space in %s: free space there or point images_dir at a "
                        "larger file system (CRIU: %s)" % (p["images_dir"], tail.splitlines()[-1:] or err)
                    )
                elif error is criu.TargetGone:
                    msg = (
                        "process %s (or one of its descendants) exited during the dump (criu rc=%s); "
                        "nothing usable was written. Re-run when the workload is up. CRIU log: %s"
                        % (pid, rc, tail or err)
                    )
                else:
                    msg = "criu dump of PID %s failed (rc=%s). CRIU log (%s):\n%s" % (
                        pid,
                        rc,
                        log,
                        tail or err,
                    )
                raise error(msg)
        except BaseException:
            shutil.rmtree(dump_dir, ignore_errors=True)
            raise
        finally:
            if direct_cuda and locked and p["leave_running"] and criu.alive(pid):
                self._cuda_step(plan, "restore")
                self._cuda_step(plan, "unlock")
            elif gpu["path"] == "criu-cuda-plugin" and criu.alive(pid):
                self._cuda_step(plan, label="after dump (plugin)")

        crit = p["crit_path"] or criu.find_executable("crit")
        stats, source, check = criu.read_stats(self.run, dump_dir, crit)
        try:
            crit_check = criu.crit_check_images(self.run, crit, dump_dir)
            plugin_ran = criu.CUDA_PLUGIN_NAME in crit_check.get("plugins", [])
            if gpu["path"] == "criu-cuda-plugin" and crit_check["checked"] and not plugin_ran:
                raise criu.GpuError(
                    "CRIU's CUDA plugin did not record itself in %s/inventory.img (plugins: %s): it "
                    "turned itself off, so the dump lacks the GPU state and was removed. See the "
                    "cuda_plugin lines of dump.log; the plugin needs %s and cuda-checkpoint on PATH"
                    % (dump_dir, crit_check["plugins"], criu.NVIDIA_GPUS_DIR)
                )
        except criu.CriuError:
            shutil.rmtree(dump_dir, ignore_errors=True)
            raise
        sizes = {"images_bytes": criu.dir_size(dump_dir), "files": len(os.listdir(dump_dir))}
        try:
            sizes["pages_bytes"] = sum(
                os.path.getsize(os.path.join(dump_dir, f))
                for f in os.listdir(dump_dir)
                if f.startswith("pages-")
            )
        except OSError:
            sizes["pages_bytes"] = None
        target = dict(plan["target"])
        manifest = {
            "format": 1,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "name": plan["name"],
            "target": target,
            "pod": {"name": p["pod"], "namespace": p["namespace"], "container": p["container"]}
            if p["pod"]
            else None,
            "pid": pid,
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
            "gpu": gpu,
            "sizes": sizes,
            "dump_wall_s": round(wall, 3),
            "stats": criu.summarize_dump_stats(stats),
            "stats_raw": stats.get("dump", {}),
            "stats_source": source,
            "stats_check": check,
            "crit_check": crit_check,
        }
        with open(os.path.join(dump_dir, MANIFEST + ".tmp"), "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        os.rename(os.path.join(dump_dir, MANIFEST + ".tmp"), os.path.join(dump_dir, MANIFEST))
        pruned = []
        dumps = _dumps_of(p["images_dir"], plan["name"])
        if p["keep"] > 0 and len(dumps) > p["keep"]:
            for old in dumps[: len(dumps) - p["keep"]]:
                if old != dump_dir:
                    shutil.rmtree(old)
                    pruned.append(old)
        return manifest, pruned

    def state_dumped(self):
        plan = self.plan_dump()
        result = {
            "changed": True,
            "command": plan["argv"],
            "checkpoint_dir": plan["dump_dir"],
            "gpu": plan["gpu"],
        }
        if self.module.check_mode:
            result["pruned"] = []
            result["msg"] = "check mode: would run %s" % " ".join(plan["argv"])
            return result
        manifest, pruned = self.dump(plan)
        result.update(manifest=manifest, pruned=pruned)
        return result

    # ---- restore ----------------------------------------------------------------------------
    def state_restored(self):
        p = self.p
        if not p["new_container"]:
            raise ModuleError("state=restored needs new_container: the name of the container to create")
        checkpoint = p["checkpoint"]
        if not checkpoint:
            if not p["images_dir"] or not p["name"]:
                raise ModuleError(
                    "state=restored needs checkpoint, or images_dir and name to pick the newest dump"
                )
            dumps = _dumps_of(p["images_dir"], p["name"])
            if not dumps:
                raise ModuleError(
                    "no dump of %r in %s (no %s-*/%s)" % (p["name"], p["images_dir"], p["name"], MANIFEST)
                )
            checkpoint = dumps[-1]
        checkpoint = checkpoint.rstrip("/")
        try:
            with open(os.path.join(checkpoint, MANIFEST)) as handle:
                manifest = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ModuleError(
                "%s is not a pod_checkpoint dump (%s: %s)" % (checkpoint, MANIFEST, exc)
            ) from None
        if manifest.get("target", {}).get("runtime") != "docker":
            raise ModuleError(
                "%s is a dump of a %s target; state=restored restores Docker container dumps only"
                % (checkpoint, manifest.get("target", {}).get("runtime"))
            )
        configured = manifest["target"].get("mount_points", [])
        propagated = [
            m
            for m in manifest.get("mounts", {}).get("external", [])
            if m.get("propagated") and m["mount_point"] not in configured
        ]
        mounted = mnt.mount_points_now() if propagated else set()
        for mount in propagated:
            host = mount.get("host_path")
            # A whole file system must be mounted there again, not just leave its empty directory.
            present = host and (host in mounted if mount["root"] == "/" else os.path.exists(host))
            if not present:
                raise ModuleError(
                    "%s came into the container from the host by propagation (%s %s); a restore binds it "
                    "from the host again, but %s: mount it there first (layer 4 does for its ramdisk)"
                    % (
                        mount["mount_point"],
                        mount["fstype"],
                        mount["source"],
                        "nothing is mounted at %s" % host if host else "the dump found no host path for it",
                    )
                )
        cp_name = os.path.basename(checkpoint)
        api = self.docker()
        info = api.info()
        root = info.get("DockerRootDir", "/var/lib/docker")
        create = copy.deepcopy(manifest["target"]["create"])
        create["Labels"] = dict(create.get("Labels") or {}, **{RESTORE_LABEL: checkpoint})
        command = [
            "docker create --name %s %s" % (p["new_container"], create["Image"]),
            "cp -a %s %s/containers/<new id>/checkpoints/%s" % (checkpoint, root, cp_name),
            "docker start --checkpoint %s %s" % (cp_name, p["new_container"]),
        ]
        try:
            existing = api.inspect(p["new_container"])
        except ctr.TargetNotFound:
            existing = None
        if existing:
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
            raise ctr.ContainerConflict(
                "a container named %s already exists (%s%s): restore needs a new container. Choose "
                "another new_container or remove it (docker rm -f %s)"
                % (
                    p["new_container"],
                    existing["State"].get("Status"),
                    ", restored from %s" % labels[RESTORE_LABEL] if RESTORE_LABEL in labels else "",
                    p["new_container"],
                )
            )
        if not info.get("ExperimentalBuild"):
            raise ctr.RuntimeUnavailable(
                "dockerd runs without experimental features, so it cannot start a container from a "
                'checkpoint: start dockerd with --experimental (or "experimental": true in daemon.json)'
            )
        gpu = self.restore_gpu_plan(manifest, checkpoint)
        staged = self.plan_staging(create, p["new_container"])
        command[0:0] = [
            "mount --rbind %s %s && mount --make-rslave %s" % (s["source"], s["staging"], s["staging"])
            for s in staged
        ]
        result = {
            "changed": True,
            "command": command,
            "checkpoint_dir": checkpoint,
            "manifest": manifest,
            "gpu": gpu["gpu"],
            "staged_binds": staged,
        }
        if self.module.check_mode:
            return result
        new_id = None
        self.prune_staging(api)
        try:
            self.stage_binds(create, staged)
            new_id = api.create(p["new_container"], create)["Id"]
            target_dir = os.path.join(root, "containers", new_id, "checkpoints", cp_name)
            if not os.path.isdir(os.path.join(root, "containers", new_id)):
                raise ctr.RuntimeUnavailable(
                    "%s/containers/%s does not exist on this host: run the module on the Docker host, "
                    "as root" % (root, new_id)
                )
            shutil.copytree(checkpoint, target_dir, symlinks=True)
            try:
                api.start(new_id, checkpoint=cp_name)
            except ctr.ContainerError as exc:
                raise ctr.ContainerError(
                    "restoring %s into %s failed: %s. runc runs the criu on dockerd's PATH: it must be "
                    "CRIU >= 4.0 as well; the new container must offer every external mount of the dump (%s)"
                    % (
                        checkpoint,
                        p["new_container"],
                        exc,
                        ", ".join(m["mount_point"] for m in manifest["mounts"]["external"]),
                    )
                ) from None
            doc = api.inspect(new_id)
            if gpu["gpu"]["path"] != "none":
                gpu["gpu"]["cuda_pids"] = criu.cuda_pids_of(criu.process_tree(doc["State"]["Pid"]))
            if gpu["gpu"]["path"] == "cuda-checkpoint":
                # Restored in the "checkpointed" CUDA state: bring the GPU state back, then unlock.
                self._cuda_step(gpu, "restore")
                self._cuda_step(gpu, "unlock")
            elif gpu["gpu"]["path"] == "criu-cuda-plugin":
                self._cuda_step(gpu, label="after restore (plugin)")
        except BaseException:
            if new_id:
                with contextlib.suppress(ctr.ContainerError):
                    api.remove(new_id)
            self.unstage_binds(staged)
            raise
        result["restored"] = {
            "container_id": new_id,
            "name": p["new_container"],
            "pid": doc["State"].get("Pid"),
            "running": doc["State"].get("Running"),
            "checkpoint": checkpoint,
        }
        return result

    def plan_staging(self, create, new_container):
        """The bind sources a restore must bind through a slave view of their own.

        While runc prepares a restore it binds every bind source recursively into the container's
        root in the host's mount namespace and detaches it again. Where the source has mounts below
        it whose parent is shared (every mount on a systemd host), that detach unmounts them on the
        host too: measured here with docker start --checkpoint, a tmpfs under a HostToContainer
        volume's source vanished from the host. A slave view (rbind, then make-rslave) still
        receives the host's mounts but sends nothing back.
        """
        host_mounts = mnt.read_mountinfo()
        staged = []
        for source in ctr.bind_sources(create):
            below = mnt.shared_submounts(source, host_mounts)
            if below:
                staged.append(
                    {
                        "source": source,
                        "staging": os.path.join(RESTORE_STAGING, new_container, str(len(staged))),
                        "submounts": sorted(set(m["mount_point"] for m in below)),
                    }
                )
        return staged

    def stage_binds(self, create, staged):
        for entry in staged:
            os.makedirs(entry["staging"], exist_ok=True)
            for argv in (
                ["mount", "--rbind", entry["source"], entry["staging"]],
                ["mount", "--make-rslave", entry["staging"]],
            ):
                rc, out, err = self.run(argv)
                if rc != 0:
                    raise ctr.ContainerError(
                        "%s failed (rc=%s): %s; nothing was restored"
                        % (" ".join(argv), rc, (err or out).strip())
                    )
            ctr.replace_bind_source(create, entry["source"], entry["staging"])

    def prune_staging(self, api):
        """Take down the slave views of restored containers that no longer exist."""
        try:
            names = os.listdir(RESTORE_STAGING)
        except OSError:
            return
        for name in names:
            try:
                api.inspect(name)
            except ctr.TargetNotFound:
                top = os.path.join(RESTORE_STAGING, name)
                self.unstage_binds([{"staging": os.path.join(top, n)} for n in os.listdir(top)])
                with contextlib.suppress(OSError):
                    os.rmdir(top)

    def unstage_binds(self, staged):
        mounted = mnt.mount_points_now()
        for entry in staged:
            if entry["staging"] in mounted:
                self.run(["umount", "-R", entry["staging"]])
            with contextlib.suppress(OSError):
                os.rmdir(entry["staging"])

    def restore_gpu_plan(self, manifest, checkpoint):
        """What restoring a dump with CUDA state needs here, checked before anything is created."""
        path = (manifest.get("gpu") or {}).get("path", "none")
        gpu = {"path": path, "states": [], "cuda_pids": []}
        plan = {"gpu": gpu, "cuda_checkpoint": None}
        if path == "none":
            gpu["reason"] = "the dump holds no CUDA state"
            return plan
        if not criu.nvidia_gpu_present():
            raise criu.GpuError(
                "%s holds CUDA state (taken by %s) but this host has no NVIDIA GPU (no %s): restore it on a "
                "GPU host, into a container that gets the GPU (docker run --gpus)"
                % (checkpoint, path, criu.NVIDIA_GPUS_DIR)
            )
        cuda_checkpoint = self.cuda_checkpoint()
        if not cuda_checkpoint:
            raise criu.GpuError(
                "%s holds CUDA state but cuda-checkpoint is not installed here (cuda_checkpoint_path, or "
                "on PATH; for the CUDA plugin also on dockerd's PATH)" % checkpoint
            )
        if path == "criu-cuda-plugin" and not self.cuda_plugin():
            raise criu.GpuError(
                "%s was dumped with CRIU's CUDA plugin, which its restore needs too: %s is missing "
                "(runc's CRIU loads its plugins from there)"
                % (checkpoint, os.path.join(self.p["criu_plugin_dir"], CUDA_PLUGIN))
            )
        plan["cuda_checkpoint"] = cuda_checkpoint
        gpu["reason"] = (
            "CRIU's CUDA plugin restores the GPU state"
            if path == "criu-cuda-plugin"
            else "%s restores and unlocks the CUDA processes after the restore" % cuda_checkpoint
        )
        return plan

    # ---- kubelet ----------------------------------------------------------------------------
    def kubelet(self):
        p = self.p
        if not (p["kubelet_url"] and p["pod"] and p["container"]):
            raise ModuleError("method=kubelet needs kubelet_url, pod and container")
        url = "%s/checkpoint/%s/%s/%s" % (
            p["kubelet_url"].rstrip("/"),
            p["namespace"],
            p["pod"],
            p["container"],
        )
        if self.module.check_mode:
            return {"changed": True, "command": ["POST", url]}
        headers = {"Authorization": "Bearer %s" % p["kubelet_token"]} if p["kubelet_token"] else {}
        # ansible.module_utils.urls costs ~0.1 s of imports that every CRIU dump (the common
        # path, timed by bench/bench_checkpoint.py) would otherwise pay.
        from ansible.module_utils.urls import open_url  # noqa: PLC0415 - kubelet path only

        try:
            response = open_url(
                url,
                method="POST",
                headers=headers,
                validate_certs=p["validate_certs"],
                ca_path=p["kubelet_ca_path"],
                timeout=p["timeout"],
            )
            answer = json.loads(response.read() or b"{}")
        except Exception as exc:  # urllib's HTTPError/URLError/ssl errors all land here
            raise ctr.RuntimeUnavailable(
                "kubelet checkpoint API %s failed: %s. The kubelet needs the ContainerCheckpoint feature "
                "(on by default since 1.30) and a CRI runtime with checkpoint support; the token needs "
                "create on nodes/checkpoint" % (url, exc)
            ) from None
        return {"changed": True, "command": ["POST", url], "kubelet": answer}


def open_text(path):
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["dumped", "restored"], default="dumped"),
            method=dict(type="str", choices=["criu", "kubelet"], default="criu"),
            pod=dict(type="str"),
            namespace=dict(type="str", default="default"),
            container=dict(type="str"),
            pid=dict(type="int"),
            runtime=dict(type="str", choices=["auto", "docker", "cri"], default="auto"),
            cri_endpoint=dict(type="str"),
            docker_socket=dict(type="path", default=ctr.DEFAULT_DOCKER_SOCKET),
            images_dir=dict(type="path"),
            name=dict(type="str"),
            keep=dict(type="int", default=3),
            leave_running=dict(type="bool", default=True),
            tcp_established=dict(type="bool", default=False),
            manage_cgroups=dict(type="bool", default=True),
            external_mounts=dict(type="str", choices=["facts", "auto"], default="facts"),
            criu_path=dict(type="path"),
            crit_path=dict(type="path"),
            criu_plugin_dir=dict(type="path", default="/usr/lib/criu"),
            cuda_checkpoint_path=dict(type="path"),
            timeout=dict(type="int", default=600),
            checkpoint=dict(type="path"),
            new_container=dict(type="str"),
            kubelet_url=dict(type="str"),
            kubelet_token=dict(type="str", no_log=True),
            kubelet_ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("pid", "pod"), ("pid", "container")],
        required_if=[("method", "kubelet", ("kubelet_url", "pod", "container"))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["keep"] < 0:
            raise ModuleError("keep must be 0 (keep all) or more, got %d" % p["keep"])
        worker = Checkpointer(module)
        if p["method"] == "kubelet":
            result = worker.kubelet()
        elif p["state"] == "restored":
            result = worker.state_restored()
        else:
            if p["pid"] is None and not p["pod"] and not p["container"]:
                raise ModuleError("say what to dump: pod (with namespace/container), container, or pid")
            result = worker.state_dumped()
    except (ModuleError, criu.CriuError, ctr.ContainerError) as exc:
        module.fail_json(msg=str(exc), error=type(exc).__name__)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
