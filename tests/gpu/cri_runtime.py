"""containerd 1.6 with its CRI plugin, started by the GPU check for its containerd step.

The GPU machine has no container runtime, so the step starts one of its own from what
tests/gpu/prepare carries (.tmp/gpu-carry/cri.tar.xz: Debian bookworm's containerd, its runc shim,
ctr and runc, the test bed's crictl and CRI workload image): its own root and state under the
check's work folder, a socket of its own, the "native" snapshotter (no overlayfs needed), no CNI
(the pod uses the host's network), and a `criu` on its PATH that runs the check's CRIU, which the
runc shim runs for containerd's checkpoint and restore. The self-test does the same on the test
bed, so that the path the GPU machine takes runs in `make test` too.

Every command is logged with its exit status and, on failure, its output: one run on the GPU
machine has to say what broke.
"""

import ctypes
import hashlib
import json
import os
import select
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import tarfile
import threading
import time
import uuid

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt

# /run/strata-gpu-cri-HASH/containerd.sock: a socket per work folder, so that a check running
# beside another (two checkouts' `make test`) never takes the other's containerd for a leftover
SOCKET_DIRS = "/run/strata-gpu-cri-"
NAMESPACE = "k8s.io"
BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "crictl")
# What LogKeeper keeps: CRIU's and runc's logs, the OCI specs, CRIU's stats (its frozen time)
KEPT = (".log", "log.json", "config.json", "stats-dump", "stats-restore")
# ctr's and crictl's options that take a value: left out of a command's short name
VALUED = ("--address", "--namespace", "--timeout", "--runtime-endpoint", "--image-endpoint", "--signal")
# CRI namespace modes (k8s.io/cri-api NamespaceMode): POD 0, CONTAINER 1, NODE 2
POD, CONTAINER, NODE = 0, 1, 2
# Mounted into the container from the host (the workload image holds one static binary): what a
# host python3 needs. /bin, /lib... are links into /usr on merged-/usr systems: their targets.
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin")
PY_DIRS = (
    "import json, os, sys; "
    "print(json.dumps([os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, *sys.path]))"
)


def socket_dir(work):
    return SOCKET_DIRS + hashlib.sha256(os.path.realpath(work).encode()).hexdigest()[:8]


class Unavailable(Exception):
    """This machine cannot run the step (the step is skipped, and says why)."""


def extract(archive, dest):
    """Unpack a tar.xz of the carry with Python's lzma: the GPU machine may lack xz."""
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        # Our own archive: its links and modes as they are (tarfile's data filter would refuse some).
        extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        tar.extractall(dest, **extra)


def sandbox_kind():
    """gvisor, firecracker or other: CRIU runs on Firecracker VMs, never under gVisor."""
    try:
        with open("/proc/version") as handle:
            version = handle.read()
    except OSError:
        version = ""
    release = os.uname().release
    if release.startswith("4.4.0") and "#1 SMP Sun Jan 10 15:06:54 PST 2016" in version:
        return "gvisor"
    if "-fc" in release or "firecracker" in version.lower():
        return "firecracker"
    return "other"


def is_under(path, roots):
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


class LogKeeper(threading.Thread):
    """Hard links to CRIU's and runc's logs (and CRIU's stats) as soon as they appear: the runc
    shim removes its CRIU work folder right after a checkpoint (CRIU writes stats-dump there last),
    containerd the unpacked checkpoint after a restore; a link keeps each file for logs.tar.gz and
    the figures. inotify sees a file at its creation (a scan every 20 ms came too late for
    stats-dump); the scan stays for what inotify misses."""

    IN_CREATE, IN_MOVED_TO, IN_IGNORED, IN_ISDIR = 0x100, 0x80, 0x8000, 0x40000000

    def __init__(self, watched, dest):
        """``watched``: {label: folder}; the links go to ``dest``, named label_path_in_folder."""
        super().__init__(daemon=True)
        self.watched, self.dest = watched, dest
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.kept = {}
        self.watches = {}  # inotify watch descriptor -> folder
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)

    def watch(self, folder):
        if self.fd >= 0 and folder not in self.watches.values():
            wd = self.libc.inotify_add_watch(self.fd, folder.encode(), self.IN_CREATE | self.IN_MOVED_TO)
            if wd >= 0:
                self.watches[wd] = folder

    def link(self, path):
        for label, top in self.watched.items():
            # not containerd's ".ID" staging copy of a bundle
            rel = os.path.relpath(path, top) if is_under(path, [top]) else None
            if rel and path.endswith(KEPT) and not any(part.startswith(".") for part in rel.split(os.sep)):
                target = os.path.join(self.dest, label + "_" + rel.replace(os.sep, "_"))
                with self.lock:
                    if target in self.kept:
                        return
                    try:
                        os.makedirs(self.dest, exist_ok=True)
                        os.link(path, target)
                    except FileExistsError:
                        pass
                    except OSError:
                        return
                    self.kept[target] = path
                return

    def keep(self):
        for top in self.watched.values():
            for folder, _dirs, files in os.walk(top):
                self.watch(folder)
                for name in files:
                    self.link(os.path.join(folder, name))

    def events(self):
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + 16 <= len(data):
            wd, mask, _cookie, size = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16 : offset + 16 + size].split(b"\0", 1)[0].decode(errors="replace")
            offset += 16 + size
            if mask & self.IN_IGNORED:  # the folder is gone: a new one of that name needs a watch
                self.watches.pop(wd, None)
                continue
            if wd not in self.watches:
                continue
            path = os.path.join(self.watches[wd], name)
            if mask & self.IN_ISDIR:
                self.watch(path)
                for folder, _dirs, files in os.walk(path):  # what came before the watch
                    self.watch(folder)
                    for inner in files:
                        self.link(os.path.join(folder, inner))
            else:
                self.link(path)

    def run(self):
        poller = select.poll()
        if self.fd >= 0:
            poller.register(self.fd, select.POLLIN)
        while not self.halt.is_set():
            if self.fd >= 0 and poller.poll(20):
                self.events()
            else:
                self.keep()
                time.sleep(0 if self.fd >= 0 else 0.02)

    def stop(self):
        self.halt.set()
        self.join(timeout=5)
        self.keep()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CriRuntime:
    """containerd with CRI, the pod and its containers, and their removal (clean_up)."""

    def __init__(self, log, work, criu_path, carry):
        self.log = log
        self.work = work
        self.dir = os.path.join(work, "cri")
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.tmp = os.path.join(self.dir, "tmp")
        self.bin = os.path.join(self.dir, "bin")
        self.criu_path = criu_path
        self.carry = carry
        self.log_path = os.path.join(work, "containerd.log")
        self.proc = None
        self.keeper = None
        self.image = None
        self.sandboxes, self.restored, self.pids = [], [], []
        self.timings = []
        self.socket_dir = socket_dir(work)
        self.socket = self.socket_dir + "/containerd.sock"
        self.facts = {"socket": self.socket}

    # ---- commands ----

    def run(self, argv, environ_update=None, timeout=300):
        """run_command's contract for the module: logged, never raises."""
        started = time.monotonic()
        env = dict(os.environ, **(environ_update or {}))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except FileNotFoundError as exc:
            rc, out, err = 127, "", str(exc)
        except subprocess.TimeoutExpired as exc:
            rc, out = 124, exc.stdout if isinstance(exc.stdout, str) else ""
            err = f"timed out after {timeout} s"
        line = shlex.join(str(a) for a in argv)
        self.timings.append((short_name(argv), rc, round(time.monotonic() - started, 3)))
        self.log(f"  $ {line[:400]} -> rc={rc} in {time.monotonic() - started:.2f} s")
        if rc != 0:
            self.log(f"    stderr: {err.strip()[-1500:]!r}; stdout: {out.strip()[-500:]!r}")
        return rc, out, err

    def must(self, argv, timeout=300, what=None):
        rc, out, err = self.run(argv, timeout=timeout)
        if rc != 0:
            raise RuntimeError(
                f"{what or ' '.join(map(str, argv[:3]))} failed (rc={rc}): {(err or out).strip()[-800:]}"
            )
        return out

    def ctr(self, *args, check=True, timeout=300):
        argv = [os.path.join(self.bin, "ctr"), "--address", self.socket, "--namespace", NAMESPACE, *args]
        return self.must(argv, timeout) if check else self.run(argv, timeout=timeout)[1]

    def crictl_argv(self):
        # the module's own crictl argv: its timeout, this containerd's socket (images too)
        return ctr.crictl_argv(os.path.join(self.bin, "crictl"), "unix://" + self.socket)

    def crictl(self, *args, check=True):
        argv = [*self.crictl_argv(), *args]
        return self.must(argv).strip() if check else self.run(argv)[1].strip()

    # ---- start ----

    def unpack(self):
        """The carried binaries and image into the work folder; Unavailable without them."""
        archive = os.path.join(self.carry, "cri.tar.xz")
        if not os.path.exists(archive):
            why = "tests/gpu/prepare did not run"
            missing = os.path.join(self.carry, "cri-missing.txt")
            if os.path.exists(missing):
                with open(missing) as handle:
                    why = handle.read().strip()
            raise Unavailable(f"no CRI runtime carried ({archive} missing: {why})")
        started = time.monotonic()
        extract(archive, os.path.dirname(self.dir))  # the archive holds cri/
        with open(os.path.join(self.dir, "image-name")) as handle:
            self.image = handle.read().strip()
        self.facts["unpack_s"] = round(time.monotonic() - started, 2)
        self.facts["image"] = self.image
        for name in BINARIES:
            if not os.access(os.path.join(self.bin, name), os.X_OK):
                raise Unavailable(f"{archive} lacks {name}")

    def cgroups(self):
        """runc needs a cgroup file system: mount cgroup2 where none is mounted (a bare VM)."""
        mounted = [p for p in mnt.mount_points_now() if is_under(p, ["/sys/fs/cgroup"])]
        with open("/proc/self/cgroup") as handle:
            self.facts["self_cgroup"] = handle.read().strip().splitlines()[:20]
        if not mounted:
            self.log("no cgroup file system at /sys/fs/cgroup: mounting cgroup2 there for runc")
            self.must(["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"], what="mount cgroup2")
            mounted = ["/sys/fs/cgroup (cgroup2, mounted by the check)"]
        self.facts["cgroup_mounts"] = mounted[:20]
        self.log(f"cgroup mounts: {mounted[:20]}")

    def needs_libseccomp(self):
        rc, out, _err = self.run(["ldconfig", "-p"])
        return rc == 0 and "libseccomp.so.2" not in out

    def start(self):
        """containerd up (clean_leftovers ran before: gpu_check's main)."""
        self.cgroups()
        for folder in (self.root, self.state, self.tmp, self.socket_dir, os.path.join(self.dir, "cni")):
            os.makedirs(folder, exist_ok=True)
        path_dir = os.path.join(self.dir, "path")
        os.makedirs(path_dir, exist_ok=True)
        # runc passes `criu swrk` a socket as fd 3: exec keeps it open.
        with open(os.path.join(path_dir, "criu"), "w") as handle:
            handle.write(f'#!/bin/sh\nexec "{self.criu_path}" "$@"\n')
        os.chmod(os.path.join(path_dir, "criu"), 0o755)
        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as handle:
            handle.write(self.config())
        env = dict(os.environ, PATH=f"{path_dir}:{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        # containerd's temporary files ($XDG_RUNTIME_DIR, else $TMPDIR; an unpacked checkpoint image
        # would go there) in the work folder, where LogKeeper sees them.
        env.update(XDG_RUNTIME_DIR=self.tmp, TMPDIR=self.tmp)
        if self.needs_libseccomp():
            env["LD_LIBRARY_PATH"] = os.path.join(self.dir, "lib")
            self.log("no libseccomp.so.2 here: runc takes the carried one")
        started = time.monotonic()
        self.log(f"starting containerd (config {config}, log {self.log_path})")
        with open(self.log_path, "ab") as log, open(os.devnull) as null:
            self.proc = subprocess.Popen(
                [os.path.join(self.bin, "containerd"), "--config", config],
                stdin=null,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        with open(os.path.join(self.socket_dir, "containerd.pid"), "w") as handle:
            handle.write(str(self.proc.pid))
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited (rc={self.proc.returncode}): {self.log_tail()}")
            probe = [os.path.join(self.bin, "ctr"), "--address", self.socket, "version"]
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not answer on {self.socket} within 60 s: {self.log_tail()}"
                )
            time.sleep(0.2)
        self.facts["start_s"] = round(time.monotonic() - started, 2)
        self.facts["containerd_exe"] = os.path.realpath(f"/proc/{self.proc.pid}/exe")
        self.facts["ctr_version"] = self.ctr("version").split()
        self.facts["runc_version"] = self.must([os.path.join(self.bin, "runc"), "--version"]).splitlines()[:1]
        self.facts["criu_version"] = self.run([os.path.join(path_dir, "criu"), "--version"])[1].strip()
        # the shims' work folders (root: what CRIU writes where no work path is named; the module
        # names them in the dump directory), the bundles (state: runc's log.json and the OCI spec)
        # and containerd's temporary files (tmp)
        tasks = "io.containerd.runtime.v2.task"
        self.keeper = LogKeeper(
            {
                "work": os.path.join(self.root, tasks),
                "bundle": os.path.join(self.state, tasks),
                "tmp": self.tmp,
            },
            os.path.join(self.work, "containerd-criu-logs"),
        )
        self.keeper.start()
        info = json.loads(self.crictl("info") or "{}")
        self.facts["cri_conditions"] = [
            (c.get("type"), c.get("status"), c.get("reason"))
            for c in info.get("status", {}).get("conditions", [])
        ]
        self.log(f"containerd up in {self.facts['start_s']} s: {json.dumps(self.facts)[:1500]}")

    def config(self):
        return f"""version = 2
root = "{self.root}"
state = "{self.state}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.image}"
  # the CRI plugin's sandbox oom_score_adj -998 needs CAP_SYS_RESOURCE, which the test bed lacks
  restrict_oom_score_adj = true
  # a kernel with AppArmor but no apparmor_parser would fail every container
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.dir}/cni"
    conf_dir = "{self.dir}/cni"
"""

    def log_tail(self, limit=3000):
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()[-limit:]
        except OSError as exc:
            return f"(no log: {exc})"

    def import_image(self):
        """The workload image (the sandbox's and the container's) into the k8s.io namespace."""
        archive = os.path.join(self.dir, "image.tar")
        self.ctr("images", "import", "--snapshotter", "native", archive, timeout=120)
        deadline = time.monotonic() + 30
        while self.image not in self.crictl("images", "-o", "json", check=False):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the CRI plugin does not list {self.image} 30 s after its import")
            time.sleep(0.2)

    # ---- the pod ----

    def run_pod(self, name, namespace, container, spec):
        """A pod (the host's network, a PID namespace per container) whose one container runs
        ``spec`` (CRI ContainerConfig fields: command, mounts, devices, envs); returns
        {"sandbox", "id", "pid"}."""
        namespaces = {"network": NODE, "pid": CONTAINER, "ipc": POD}
        security = {"security_context": {"namespace_options": namespaces}}
        labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace}
        pod_config = os.path.join(self.dir, f"{name}-pod.json")
        with open(pod_config, "w") as handle:
            meta = {"name": name, "namespace": namespace, "uid": uuid.uuid4().hex, "attempt": 0}
            logs = os.path.join(self.work, "pod-logs")
            json.dump({"metadata": meta, "labels": labels, "log_directory": logs, "linux": security}, handle)
        container_config = os.path.join(self.dir, f"{name}-{container}.json")
        config = dict(
            spec,
            metadata={"name": container},
            image={"image": self.image},
            labels=dict(labels, **{"io.kubernetes.container.name": container}),
            log_path=container + ".log",
            linux={"security_context": {"namespace_options": namespaces}},
        )
        with open(container_config, "w") as handle:
            json.dump(config, handle, indent=1)
        self.log(f"container config: {json.dumps(config)[:3000]}")
        sandbox = self.crictl("runp", pod_config)
        self.sandboxes.append(sandbox)
        cid = self.crictl("create", sandbox, container_config, pod_config)
        self.crictl("start", cid)
        pid = self.container_pid(cid)
        self.remember(pid)
        sandbox_info = json.loads(self.crictl("inspectp", "-o", "json", sandbox)).get("info") or {}
        if sandbox_info.get("pid"):
            self.remember(int(sandbox_info["pid"]))
        # which binaries run: the carried ones, not a host's
        shims = {pid: os.path.realpath(f"/proc/{pid}/exe") for pid in self.shims()}
        self.facts["shims"] = shims
        self.log(f"pod {namespace}/{name}: sandbox {sandbox}, container {cid} (pid {pid}); shims {shims}")
        return {"sandbox": sandbox, "id": cid, "pid": pid}

    def remember(self, pid):
        """A process of the pod, killed at the clean-up if it is still that process then."""
        self.pids.append((pid, started_at(pid)))

    def container_pid(self, cid):
        info = json.loads(self.crictl("inspect", "-o", "json", cid)).get("info") or {}
        if not info.get("pid"):
            raise RuntimeError(f"crictl inspect {cid} shows no pid")
        return int(info["pid"])

    def shims(self):
        return shims(self.socket)

    # ---- clean-up ----

    def remove_container(self, name):
        """A container made with ctr (the restored one): its task killed and removed, then it."""
        self.ctr("tasks", "kill", "--signal", "SIGKILL", name, check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listed = self.ctr("tasks", "ls", check=False)
            rows = [line.split() for line in listed.splitlines()[1:]]
            if not any(row[0] == name and row[2] != "STOPPED" for row in rows if len(row) >= 3):
                break
            time.sleep(0.2)
        self.ctr("tasks", "rm", name, check=False)
        self.ctr("containers", "rm", name, check=False)

    def clean_up(self):
        """Everything this runtime made, then containerd itself; its root and state go too when
        nothing is mounted below them any more. Logs a line per failure, never raises."""
        for name in self.restored:
            self.remove_container(name)
        for sandbox in self.sandboxes:
            self.crictl("rmp", "--force", sandbox, check=False)
        if self.keeper:
            self.keeper.stop()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.log("containerd did not stop within 20 s of SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        # Shims outlive containerd; processes of a pod whose removal failed outlive their shim.
        gone = [pid for pid, start in self.pids if start and started_at(pid) == start]
        kill_shims(self.log, self.socket, gone)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if unmount_below(self.log, self.dir):
            for folder in (self.root, self.state, self.tmp):
                subprocess.run(["rm", "-rf", "--one-file-system", folder], check=False)


def shims(socket):
    """The runc shims of the containerd of ``socket`` (their command line names it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
            found.append(int(entry))
    return found


def kill_shims(log, socket, more=()):
    """SIGKILL to the shims of the containerd of ``socket``, the containers' processes they
    started, and ``more``."""
    found = shims(socket)
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[1]) in found:
                    children.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    for pid in dict.fromkeys([*children, *more, *found]):
        try:
            os.kill(pid, signal.SIGKILL)
            log(f"killed leftover process {pid}")
        except (ProcessLookupError, PermissionError):
            pass


def unmount_below(log, folder):
    """Lazy unmounts of every mount below ``folder`` (a pod's shm, the native snapshotter's rootfs
    binds); True when none is left, so that it can go."""
    for point in sorted((p for p in mnt.mount_points_now() if is_under(p, [folder])), key=len, reverse=True):
        done = subprocess.run(["umount", "-l", point], capture_output=True, text=True, check=False)
        log(f"umount -l {point}: rc={done.returncode} {done.stderr.strip()}")
    if any(is_under(p, [folder]) for p in mnt.mount_points_now()):
        log(f"mounts are left below {folder}: it is kept")
        return False
    return True


def clean_leftovers(log, work):
    """What a run killed before its clean-up left (its containerd, shims, pod processes, mounts
    below ``work``): the next run removes ``work`` first."""
    try:
        with open(os.path.join(socket_dir(work), "containerd.pid")) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        pid = None
    socket = socket_dir(work) + "/containerd.sock"
    if pid and holds_socket(pid, socket):
        log(f"stopping the containerd (pid {pid}) an earlier run left")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while started_at(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    kill_shims(log, socket)
    if os.path.isdir(work):
        unmount_below(log, work)


def started_at(pid):
    """The start time of process ``pid`` (clock ticks since boot), None when it is gone: with the
    pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def holds_socket(pid, path):
    """Whether process ``pid`` holds the unix socket bound to ``path``."""
    try:
        with open("/proc/net/unix") as handle:
            inodes = {line.split()[6] for line in handle if line.rstrip().endswith(" " + path)}
        links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    return any(f"socket:[{inode}]" in links for inode in inodes)


def short_name(argv):
    """``ctr containers checkpoint``: a command's binary and first two words, for the figures."""
    words, skip = [os.path.basename(str(argv[0]))], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg in VALUED:
            skip = True
        elif not str(arg).startswith("-") and len(words) < 3:
            words.append(str(arg))
    return " ".join(words)


def python_mounts(run, python):
    """The folders the host's ``python`` needs besides SYSTEM_DIRS (a venv, a Python of its own,
    PYTHONPATH's folders), for bind mounts at the same paths."""
    rc, out, err = run([python, "-c", PY_DIRS])
    if rc != 0:
        raise RuntimeError(f"{python} does not say where it lives: {err.strip()[-300:]}")
    return [p for p in json.loads(out) if p and os.path.isabs(p) and os.path.exists(p)]


def libcuda_dir(run):
    """The folder of the driver's libcuda.so.1 as ldconfig knows it, else None."""
    _rc, out, _err = run(["ldconfig", "-p"])
    for line in out.splitlines():
        if line.strip().startswith("libcuda.so.1 ") and "x86-64" in line and "=>" in line:
            return os.path.dirname(line.split("=>")[1].strip())
    for folder in ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"):
        if os.path.exists(os.path.join(folder, "libcuda.so.1")):
            return folder
    return None


def nvidia_devices():
    """The NVIDIA device nodes, as CRI devices."""
    found = []
    for folder in ("/dev", "/dev/nvidia-caps"):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith("nvidia") and stat.S_ISCHR(os.stat(path).st_mode):
                found.append({"container_path": path, "host_path": path, "permissions": "rwm"})
    return found


def bind_mounts(paths, writable=()):
    """CRI mounts that show the container each of ``paths`` (and SYSTEM_DIRS) at its own path, read
    only but for ``writable``; a path below another mount needs none. The host's mounts below
    each become mounts of their own: an rbind brings them along, but CRIU dumps a container only
    when runc names every mount as external, which runc does for the spec's mounts alone."""
    chosen = {d: os.path.realpath(d) for d in SYSTEM_DIRS if os.path.exists(d)}
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if path in writable or not is_under(path, list(chosen)):
            chosen[path] = os.path.realpath(path)
    points = mnt.mount_points_now()
    for container, host in list(chosen.items()):
        for point in points:
            if point != host and is_under(point, [host]):
                chosen.setdefault(container + point[len(host) :], point)
    return [
        {"container_path": c, "host_path": chosen[c], "readonly": c not in writable}
        for c in sorted(chosen, key=lambda p: (p.count("/"), p))
    ]
