#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


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
    and a process of the tree uses CUDA, the CUDA state is frozen and copied into host memory
    before CRIU dumps it. CRIU's CUDA plugin (C(cuda_plugin.so) in O(criu_plugin_dir)) does that
    itself through C(cuda-checkpoint); without the plugin this module does it (lock, checkpoint,
    dump, restore, unlock) through C(cuda-checkpoint) or, where no such binary is installed,
    through the driver's own checkpoint API in C(libcuda) (C(cuCheckpointProcessLock) and its
    siblings, driver r570+; what cuda-checkpoint itself calls). The plugin needs C(cuda-checkpoint)
    with C(--action) (driver r555+) on PATH (the one found here is put first) and turns itself off
    without it, so the module refuses instead of writing a dump without the GPU state, and checks
    with C(crit) that the plugin recorded itself in C(inventory.img). The C(gpu) result says which
    path was taken and why, with the CUDA state at each step; without a GPU it says plainly that
    the GPU path was not taken."
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
  - A restore through Docker, containerd or the kubelet runs the CRIU on the PATH of the containerd
    serving it (runc's, started by its runc shim). A dump whose manifest names a CRIU release newer
    (major.minor) than every such CRIU the module can read is refused before anything is created, as
    CRIU reads the images of its own and older releases only.
  - CRIU reopens every file the dumped processes had open by its path and refuses a restore when one
    is missing or its size or mode changed. Before a restore, the files on the container's bind
    mounts (read from the dump's C(files.img); the binds from Docker's create config, the
    container's OCI spec for O(method=containerd), the pod spec's hostPath volumes for
    O(method=kubelet)) are checked on the host, and a changed one is named with its host path
    before anything is created.
  - "O(method=kubelet) asks the kubelet's checkpoint API (C(POST /checkpoint/NS/POD/CONTAINER),
    Kubernetes 1.25+ with the C(ContainerCheckpoint) feature; the CRI runtime, containerd 2.x or
    CRI-O, runs CRIU) and moves the archive it writes on the node into a dump directory, with the
    pod's spec read from the API server. O(state=restored) restores such a dump as the NEW pod
    O(new_pod) on O(node): the archive is imported into the node's containerd as a checkpoint image
    (annotation C(org.criu.checkpoint.container.name)), and a copy of the original pod's spec runs
    the checkpointed container from it, which containerd's CRI plugin restores instead of starting.
    The module runs on the node (the archive is a file there). On a node with an NVIDIA GPU the
    container's CUDA processes (found through C(crictl)) are frozen only around the kubelet's
    checkpoint, as for O(method=containerd), and a restored pod's are restored and unlocked once it
    runs (a pod that cannot be thawed is deleted again)."
  - Docker is reached through its HTTP API on the unix socket with the Python standard library
    (no Docker SDK or CLI needed on the host).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.k8s_auth
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
      - V(criu) runs CRIU on this host.
      - V(kubelet) calls the kubelet checkpoint API (O(kubelet_url)) and restores as a new pod (O(new_pod));
        it reads and creates pods through the Kubernetes API (O(kubeconfig)).
      - V(containerd) uses containerd's own checkpoint and restore of the CRI container of O(pod)
        (containerd 1.6 and 1.7, as MicroK8s and k3s run it, and 2.x) through containerd's API. The task
        is paused, its runc shim writes CRIU's images into C(criu/) of the dump directory, the
        container's rw layer is diffed into C(rw.tar), and the task resumes (left running; RV(frozen_s)
        says how long it was paused). O(state=restored) creates the new container O(new_container)
        from the recorded container (image, runtime, OCI spec) with the rw layer applied and a cgroup of
        its own beside the dumped container's (in the pod's cgroup), and its task restored from C(criu/)
        in place - nothing is copied into containerd's content store or extracted. Needs the Python
        library C(grpcio) where the module runs (Debian C(python3-grpcio)).
        The runc shim runs the C(criu) on containerd's PATH, which must be CRIU >= 4.
        CUDA processes in the container are frozen on the GPU (lock, checkpoint) only while the task is
        paused, as for V(criu); the restore brings the restored processes' GPU state back and unlocks
        them before it returns.
    type: str
    choices: [criu, containerd, kubelet]
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
  containerd_address:
    description:
      - containerd's socket for O(method=containerd). Default the socket of O(cri_endpoint) when it is a
        C(unix://) URL (containerd serves CRI and its own API on one socket), else
        C(/run/containerd/containerd.sock).
    type: path
  containerd_namespace:
    description: containerd namespace of the containers (the CRI plugin's is C(k8s.io)).
    type: str
    default: k8s.io
  ctr_path:
    description:
      - containerd's C(ctr) client, which O(method=kubelet) imports the checkpoint image into the node's
        containerd with. O(method=containerd) runs no ctr (it talks to containerd's API); its messages
        name the ctr commands that remove what a failed clean-up left with this path.
        Default C(ctr) on PATH.
    type: path
  docker_socket:
    description: Docker API unix socket.
    type: path
    default: /var/run/docker.sock
  images_dir:
    description:
      - Directory that holds the dated dump directories. Created when missing.
      - Required for O(method=criu), and with O(state=restored) unless O(checkpoint) is given.
      - A dump is refused before anything is frozen when the file system there has less room than the
        memory it writes (the processes' anonymous and shared memory, RssAnon + RssShmem). One that runs
        out of room anyway leaves no partial dump directory.
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
    description:
      - Leave the target running after the dump (C(--leave-running)). V(false) makes CRIU kill it with
        the dump; the kubelet of a pod starts such a container again, so a pod is stopped through its
        workload instead (role C(strata.ops.pod_checkpoint) scales its Deployment or StatefulSet to 0
        after the dump).
      - O(method=containerd) and O(method=kubelet) never stop the container and refuse V(false).
    type: bool
    default: true
  pre_dumps:
    description:
      - How many C(criu pre-dump) passes copy the memory while the process runs before the final
        dump, which then writes only the pages dirtied since (CRIU's memory changes tracking,
        C(--track-mem) and C(--prev-images-dir)). What the workload feels is the frozen time,
        reported as RV(frozen_s); a pre-dump shortens it when most memory stays unchanged.
      - Needs a kernel with memory dirty tracking (C(criu check --feature mem_dirty_track));
        refused before anything is written where it is missing, and for CUDA processes.
      - Pre-dump images are kept in C(pre-1) .. C(pre-N) inside the dump directory.
      - The kernel tracks dirty memory per page it maps, so a process under transparent huge pages
        that writes a little into many 2 MiB pages dirties all of them; the module warns when the
        final dump still wrote more than half of the pages it scanned (the pre-dumps saved little).
    type: int
    default: 0
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
    description:
      - NVIDIA's C(cuda-checkpoint); default the first on PATH.
      - Without one, CUDA processes are frozen through the driver API of O(cuda_driver_library).
    type: path
  cuda_driver_library:
    description:
      - The CUDA driver library whose checkpoint API (C(cuCheckpointProcess*), driver r570+) freezes
        CUDA processes when no C(cuda-checkpoint) is installed. Loaded only then.
    type: str
    default: libcuda.so.1
  cuda_lock_timeout:
    description:
      - Seconds a CUDA process may take to reach a point where it can be locked (C(--timeout) of
        C(cuda-checkpoint --action lock), C(timeoutMs) of the driver call); 0 waits without limit.
      - The default is CRIU's own default timeout, which its CUDA plugin uses for the same lock.
    type: int
    default: 10
  timeout:
    description:
      - Seconds to wait for the kubelet checkpoint API, and for a pod restored with O(method=kubelet)
        to run the restored container.
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
  new_pod:
    description:
      - With O(method=kubelet) and O(state=restored), the name of the new pod (in O(namespace)). It must
        not exist yet; a running pod of that name restored from the same checkpoint counts as done.
      - It gets none of the original pod's labels (the original's ReplicaSet would adopt or delete it),
        but C(strata.io/restored-from-pod=ORIGINAL) and the annotation C(strata.io/restored-from).
    type: str
  node:
    description:
      - With O(method=kubelet) and O(state=restored), the node the new pod runs on; default the node of
        the original pod. The module must run on that node (its containerd imports the checkpoint image).
    type: str
  kubelet_url:
    description: Kubelet base URL for O(method=kubelet), for example C(https://node1:10250).
    type: str
  kubelet_token:
    description:
      - Bearer token allowed to C(create) C(nodes/checkpoint).
      - Not logged (C(no_log)).
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
  - grpcio (Debian C(python3-grpcio)) for O(method=containerd)
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

- name: Checkpoint through the kubelet API (on the pod's node, where the kubelet writes the archive)
  strata.ops.pod_checkpoint:
    method: kubelet
    kubelet_url: https://127.0.0.1:10250
    kubelet_token: "{{ lookup('ansible.builtin.file', 'checkpoint.token') }}"
    kubelet_ca_path: /etc/kubernetes/pki/ca.crt
    kubeconfig: /etc/strata/admin.kubeconfig
    pod: pytorch-stress
    namespace: kybernate-system
    container: pytorch
    images_dir: /srv/checkpoints
  delegate_to: node1

- name: Restore that dump as a new pod on the same node
  strata.ops.pod_checkpoint:
    method: kubelet
    state: restored
    images_dir: /srv/checkpoints
    name: pytorch-stress-pytorch
    namespace: kybernate-system
    new_pod: pytorch-stress-restored
    kubeconfig: /etc/strata/admin.kubeconfig
    containerd_address: /run/containerd/containerd.sock
  delegate_to: node1

- name: Print the command a dump would run
  strata.ops.pod_checkpoint:
    container: my-app
    images_dir: /srv/checkpoints
  check_mode: true
  register: plan
"""

RETURN = r"""
command:
  description:
    - The command run (or, in check mode, the command that would run), as a list.
    - With O(method=containerd), the containerd call that checkpoints (C(Tasks.Checkpoint)) or restores
      (C(Tasks.Create)); RV(commands) lists them all.
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
      C(gpu), C(sizes), C(stats) (C(frozen_s), freezing/frozen/memdump/memwrite times in
      microseconds and pages written), C(pre_dumps) (command and wall time of each pre-dump),
      C(dump_wall_s) (CRIU's wall time), C(durable_s) (the seconds spent syncing the dump to the
      disk after CRIU, before the manifest was written), C(stats_source), C(stats_check) and
      C(crit_check) (C(crit) read C(pstree.img) and C(inventory.img); C(plugins) lists the CRIU
      plugins the restore needs).
    - With method=containerd, C(format) (2), C(container) (the image, runtime and its options, OCI spec,
      snapshotter and the image's snapshot the restored container is made from), C(images) (CRIU's
      images directory), C(rw_layer) (the rw layer's file, digest and size), C(frozen_s), C(sizes)
      (C(files) holds each image file's size, checked by a restore), C(pod), C(target) and
      C(joined_namespaces), the pod sandbox's namespaces the container joins, each C(type), C(path)
      and C(id) (its identity at dump time, for example C(net:[4026532323])). A restore is refused
      while one of
      them is gone, as the restored container joins them again. C(gpu) holds the GPU path
      the dump took (C(path)) and its CUDA processes (C(cuda_pids)). C(criu) names the CRIU the
      runc shim ran (C(path) as containerd sees it, C(version)), the first C(criu) on the PATH of
      the containerd serving the socket (empty when it is not one known CRIU). C(binds) lists the
      container's bind mounts as (container path, host path) pairs, from its OCI spec; a restore
      checks the files the process had open on them.
    - With method=kubelet, C(stats) as for a CRIU dump, from the archive's C(stats-dump) (null without one),
      and C(criu) as for method=containerd, of the node's containerd (O(containerd_address)).
  returned: success and not check mode
  type: dict
gpu:
  description:
    - Whether the GPU path was taken (C(taken)), which one (C(path) is C(criu-cuda-plugin),
      C(cuda-checkpoint), C(cuda-driver-api) or C(none)), why (C(reason)), the CUDA processes
      (C(cuda_pids)), the CUDA state and the seconds of each step (C(states)) and, when this
      module locked the processes itself, how long they stayed locked (C(locked_s)).
    - With O(state=restored), the same for the restore (C(path) is the dump's).
    - With O(method=containerd) or O(method=kubelet), C(locked_s) covers the runtime's checkpoint
      alone (the paused task's checkpoint and rw diff, the kubelet's POST); the copy of the rw layer or
      the move of the archive runs after the thaw.
  returned: always
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
frozen_s:
  description:
    - How long the process tree was frozen by the final dump, in seconds (CRIU's own
      C(frozen_time) from C(stats-dump)), which is what a running job feels, unlike the dump's wall time.
    - With O(method=kubelet), from the C(stats-dump) containerd's CRI plugin puts in the kubelet's archive;
      null, with a warning, when the archive has none.
    - With O(method=containerd), how long the task was paused (CRIU's dump and the diff of the rw layer).
  returned: state=dumped, not in check mode
  type: float
  sample: 0.412
pre_dump_commands:
  description: The C(criu pre-dump) commands run (or that would run) before the final dump.
  returned: state=dumped and O(pre_dumps) > 0
  type: list
  elements: list
pruned:
  description: Older dump directories removed because of O(keep).
  returned: state=dumped
  type: list
  elements: str
abandoned_removed:
  description:
    - Unfinished dump directories of the same O(name) removed before this dump - left by a run killed
      mid-dump (no manifest, its writer process gone) or empty. A dump another live run is writing stays.
  returned: state=dumped
  type: list
  elements: str
store_images_removed:
  description:
    - With O(method=kubelet), when this dump pruned older ones, the checkpoint images of O(name)
      that restores imported into this node's containerd, whose dump is gone and that no pod on the
      node runs (each as large as its dump; nothing else removes them).
  returned: state=dumped with method=kubelet
  type: list
  elements: str
store_images_kept:
  description:
    - With O(method=kubelet), the checkpoint images of pruned dumps that stay in the node's
      containerd because pods on the node run them (C(NAMESPACE/POD) each), as containerd's CRI
      restores a restarted container from its image again. A later dump that prunes removes them
      once those pods are gone.
  returned: state=dumped with method=kubelet
  type: dict
restored:
  description:
    - The new container (C(container_id), C(name), C(pid) on the host, C(checkpoint)); with
      O(method=containerd), C(container), C(pid), C(log) (the file the restored process's stdout
      and stderr go to, C(restored-NEW_CONTAINER.log) in the dump directory) and C(criu_log) (CRIU's
      log of the restore, C(restored-NEW_CONTAINER-criu/restore.log) there, which stays when a failed
      restore is removed, its errors quoted in the failure's message); with O(method=kubelet),
      C(pod), C(node), C(container_id) and C(restart_count).
  returned: state=restored and not check mode
  type: dict
containerd_copy_removed:
  description:
    - The copy of the checkpoint that containerd extracts into its temporary directory for the restore
      (C(ctrd-checkpoint*) in C(XDG_RUNTIME_DIR), C(TMPDIR) or C(/tmp)) and never removes, removed once
      the restore call returned - a full copy of the process's memory, often on a tmpfs. V(null) when
      none was found; two copies of the same checkpoint at once, or one that could not be removed, are left,
      with a warning.
  returned: state=restored with O(method=criu), not check mode
  type: str
  sample: /tmp/ctrd-checkpoint2032093446
kubelet:
  description: The kubelet's answer (C(items) lists the checkpoint archives on the node).
  returned: method=kubelet and state=dumped and not check mode
  type: dict
method:
  description: C(containerd) or C(kubelet) for a dump or restore through containerd or the kubelet.
  returned: method=containerd or method=kubelet
  type: str
image_ref:
  description:
    - The checkpoint image in containerd's store (C(strata.local/checkpoint/NAME:STAMP)) the restore
      makes from the kubelet's archive.
  returned: method=kubelet and state=restored
  type: str
  sample: strata.local/checkpoint/counter:20250101T000000.000Z
pod:
  description: With O(method=kubelet), the new pod as it was created (or would be, in check mode).
  returned: method=kubelet and state=restored and the pod did not exist
  type: dict
commands:
  description:
    - With O(method=containerd), every containerd API call a dump or restore made (or, in check mode,
      what it would do), in order.
    - With O(method=kubelet) and O(state=restored), every C(ctr) command run (or that would run).
  returned: method=containerd, or method=kubelet and state=restored
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import module as checkpoint
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.gpu import LIBCUDA
from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.k8s_options import K8S_AUTH_ARGSPEC


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **K8S_AUTH_ARGSPEC,
            state=dict(type="str", choices=["dumped", "restored"], default="dumped"),
            method=dict(type="str", choices=["criu", "containerd", "kubelet"], default="criu"),
            pod=dict(type="str"),
            namespace=dict(type="str", default="default"),
            container=dict(type="str"),
            pid=dict(type="int"),
            runtime=dict(type="str", choices=["auto", "docker", "cri"], default="auto"),
            cri_endpoint=dict(type="str"),
            containerd_address=dict(type="path"),
            containerd_namespace=dict(type="str", default="k8s.io"),
            ctr_path=dict(type="path"),
            docker_socket=dict(type="path", default=ctr.DEFAULT_DOCKER_SOCKET),
            images_dir=dict(type="path"),
            name=dict(type="str"),
            keep=dict(type="int", default=3),
            leave_running=dict(type="bool", default=True),
            pre_dumps=dict(type="int", default=0),
            tcp_established=dict(type="bool", default=False),
            manage_cgroups=dict(type="bool", default=True),
            external_mounts=dict(type="str", choices=["facts", "auto"], default="facts"),
            criu_path=dict(type="path"),
            crit_path=dict(type="path"),
            criu_plugin_dir=dict(type="path", default="/usr/lib/criu"),
            cuda_checkpoint_path=dict(type="path"),
            cuda_driver_library=dict(type="str", default=LIBCUDA),
            cuda_lock_timeout=dict(type="int", default=10),
            timeout=dict(type="int", default=600),
            checkpoint=dict(type="path"),
            new_container=dict(type="str"),
            new_pod=dict(type="str"),
            node=dict(type="str"),
            kubelet_url=dict(type="str"),
            kubelet_token=dict(type="str", no_log=True),
            kubelet_ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("pid", "pod"), ("pid", "container")],
        supports_check_mode=True,
    )
    run_module(module, lambda: checkpoint.run(module.params, module.check_mode, module.run_command))


if __name__ == "__main__":
    main()
