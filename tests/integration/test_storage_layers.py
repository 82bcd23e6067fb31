"""Layers 1, 2 and 4 (base_system, host_storage, workload_storage) against bad input, run as
operators run them: the real playbooks through ansible-playbook, on a systemd host container
of our own started from the test bed's host image, with a real (zfs-fuse) pool in it.

Issue 3's "Bad input" list, one test each: a missing pool; a dataset outside the pool; the
/srv/solana trap (a plain directory with files on the parent dataset, or another dataset,
where the workload dataset belongs: found from the mount table and device numbers); a path
that is a dataset of another parent; a ramdisk size that is not a size or exceeds memory;
a tmpfs of another size holding files (a remount keeps them); a ramdisk path that already
has another mount; and every layer in check mode on a host whose lower layers are converged
(reports what it would do, changes nothing).

Every failing run must say which path/setting fails, what it is, what it should be and which
layer (or the inventory) fixes it, and must change NOTHING: `zfs list`, the local ZFS
properties, /etc/fstab, `findmnt` and the tree under /srv inside the host are compared before
and after.

One container serves the whole module (booting it and converging layer 1 takes ~15 s). Tests
ask for the state they start from (`node.at("l1" | "l2" | "converged")`); the fixture brings
the host there only when it is not there already, and a test that had to break things marks
the host dirty unless its clean-up provably restored the state. Without docker or the host
image the tests fail under CI=true and are skipped otherwise, with the reason.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from .conftest import REPO, skip_or_fail

pytestmark = pytest.mark.needs("docker")

LAB_VARS = os.path.join(REPO, "inventories", "lab", "group_vars", "strata_hosts.yml")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
L1 = "playbooks/layer1_base.yml"
L2 = "playbooks/layer2_host_storage.yml"
L4 = "playbooks/layer4_workload_storage.yml"

# The lab layout (inventories/lab/group_vars/strata_hosts.yml).
POOL = "lab"
ROOT = "/srv/kind"
ROOT_DS = "lab/DATA/srv/kind"
WL = "/srv/kind/solana"
WL_DS = "lab/DATA/srv/kind/solana"
RAMDISK = "/srv/kind/solana/ramdisk"

# ansible-playbook's environment: this repo's config, results as JSON documents.
PLAYBOOK_ENV = dict(
    os.environ,
    ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
    ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    ANSIBLE_NOCOLOR="1",
)

# What "nothing changed" compares inside the host.
SNAPSHOT = {
    "datasets": "zfs list -H -o name,mountpoint",
    "local zfs properties": "zfs get -H -s local -o name,property,value all",
    "fstab": "cat /etc/fstab",
    "mounts": "findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS",
    "files under /srv": "find /srv -printf '%p %y %s\\n' | sort",
    "docker daemon config": "cat /etc/docker/daemon.json 2>/dev/null || echo absent",
    "sysctl file": "cat /etc/sysctl.d/90-strata-ops.conf 2>/dev/null || echo absent",
}

# Back to "layer 1 converged, the pool empty": no mounts, datasets, fstab lines or files of
# layers 2-4. zfs-fuse says "busy" for a moment after unmounts, hence the retries.
RESET_SCRIPT = r"""
set -u
for i in 1 2 3 4 5; do
  findmnt -rn -o TARGET,FSTYPE | awk '$1 ~ "^/srv(/|$)" && $2 != "fuse.zfs" {print $1}' | sort -r \
    | xargs -r -n1 umount 2>/dev/null
done
for ds in $(zfs list -H -o name -d 1 lab | tail -n +2); do
  for i in $(seq 30); do zfs destroy -r "$ds" 2>/dev/null && break; sleep 0.3; done
done
sed -i '\#^[^#][^[:space:]]*[[:space:]]\+/srv/#d' /etc/fstab
systemctl daemon-reload
if findmnt -rn -o TARGET | grep -q '^/srv'; then
  echo "still mounted under /srv:"; findmnt -rn -o TARGET,SOURCE | grep '^/srv'; exit 1
fi
[ "$(zfs list -H -o name -r lab)" = lab ] || { zfs list -r lab; exit 1; }
rm -rf /srv && mkdir -m 0755 /srv
"""


def docker(*args, check=True, timeout=120):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            "docker {} failed ({}): {}{}".format(" ".join(args), proc.returncode, proc.stdout, proc.stderr)
        )
    return proc


def lib_sh(function):
    """Output of a tests/testbed/lib.sh function (host_image, host_run_opts)."""
    proc = subprocess.run(
        ["bash", "-c", f"source tests/testbed/lib.sh && {function}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"tests/testbed/lib.sh {function} failed: {proc.stderr}")
    return proc.stdout.strip()


def docker_problem():
    """Why no host container can be started here (None when one can)."""
    if not shutil.which("docker"):
        return "the docker CLI is not installed (tests/testbed/up installs docker.io)"
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"the docker engine does not answer (tests/testbed/up starts dockerd): {proc.stderr.strip()}"
    image = lib_sh("host_image")
    if docker("image", "inspect", image, check=False).returncode != 0:
        return f"the host image {image} is missing (tests/testbed/up image builds it)"
    if not os.path.exists(ANSIBLE_PLAYBOOK):
        return f"ansible-playbook not found beside {sys.executable}"
    return None


def json_documents(text):
    """The JSON documents the ansible.posix.json callback printed (one per playbook)."""
    docs, decoder = [], json.JSONDecoder()
    while "{" in text:
        try:
            doc, end = decoder.raw_decode(text, text.index("{"))
        except ValueError:
            break
        docs.append(doc)
        text = text[end:]
    return docs


def task_results(docs, host):
    """(task as the callback records it: name, duration; the host's result) of every task that ran
    on ``host``, in order."""
    for doc in docs:
        for play in doc.get("plays", []):
            for task in play["tasks"]:
                result = task["hosts"].get(host)
                if result is not None:
                    yield task["task"], result


class Run:
    """One ansible-playbook run, read from the ansible.posix.json callback (one JSON document
    per playbook given on the command line)."""

    def __init__(self, proc, node):
        self.rc = proc.returncode
        self.raw = proc.stdout + proc.stderr
        docs = json_documents(proc.stdout)
        self.docs = docs
        if not docs:
            raise AssertionError(f"ansible-playbook printed no JSON (rc {self.rc}):\n{self.raw}")
        self.changed = self.failures = 0
        self.failed_msgs = []
        self.changed_tasks = []
        self.skipped_tasks = []
        self.deprecations = []  # (task, message): the json callback keeps them in the results
        self.warnings = []
        for doc in docs:
            stats = doc["stats"].get(node, {})
            self.changed += stats.get("changed", 0)
            self.failures += stats.get("failures", 0) + stats.get("unreachable", 0)
            for play in doc["plays"]:
                for task in play["tasks"]:
                    result = task["hosts"].get(node)
                    if not result:
                        continue
                    if result.get("failed") or result.get("unreachable"):
                        self.failed_msgs.append(str(result.get("msg", result)))
                    task_name = task["task"]["name"]
                    self.deprecations += [
                        (task_name, d.get("msg", d)) for d in result.get("deprecations") or []
                    ]
                    self.warnings += [(task_name, w) for w in result.get("warnings") or []]
                    # "role : task name" -> "task name"
                    short_name = task_name.split(" : ", 1)[-1]
                    if result.get("changed"):
                        self.changed_tasks.append(short_name)
                    if result.get("skipped"):
                        self.skipped_tasks.append(short_name)

    @property
    def msg(self):
        return "\n".join(self.failed_msgs)

    def __repr__(self):
        return (
            f"<ansible-playbook rc={self.rc} changed={self.changed} failures={self.failures} "
            f"changed_tasks={self.changed_tasks} msgs={self.failed_msgs}>"
        )


# What the host's processes were doing (state, kernel wait channel) when a command on it did not end
# in time: a zfs-fuse that stopped answering shows as zfs commands and FUSE requests waiting on it.
PROCESSES = "ps -eo pid,ppid,stat,wchan:28,etime,args"


class Host:
    """A host container (see host_container). ``boot`` starts a new one and returns its name and
    inventory; ``layers`` are converged on every host it boots."""

    def __init__(self, boot, layers=()):
        self._boot = boot
        self.layers = layers
        self.name = self.inventory = None
        self.state = "l1"
        self.baseline = {}

    def start(self):
        self.name, self.inventory = self._boot()
        self.state, self.baseline = "l1", {}
        for layer in self.layers:
            self.converge(layer)

    def remove(self):
        if self.name:
            docker("rm", "-f", "-v", self.name, check=False)

    def timed_out(self, what, exc):
        """A command that did not end in time: the failure shows the host's processes, and the
        host is not used again (every later zfs call would hang the same way): the next test that
        asks for a state gets a new host."""
        self.state = "wedged"
        try:
            processes = docker("exec", self.name, "sh", "-c", PROCESSES, check=False, timeout=30).stdout
        except subprocess.TimeoutExpired:
            processes = "(ps did not answer within 30 s either)"
        return AssertionError(
            f"{what} on {self.name} did not end within {exc.timeout:.0f} s; its processes then:\n{processes}"
        )

    def sh(self, script, check=True):
        try:
            proc = docker("exec", self.name, "sh", "-c", script, check=False)
        except subprocess.TimeoutExpired as exc:
            raise self.timed_out(f"{script.strip().splitlines()[0]!r}", exc) from None
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {script!r} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def snapshot(self):
        return {what: self.sh(cmd) for what, cmd in SNAPSHOT.items()}

    def argv(self, *playbooks, check=False, diff=False, **overrides):
        """ansible-playbook's command line for these playbooks on this host (with PLAYBOOK_ENV)."""
        argv = [ANSIBLE_PLAYBOOK, "-i", self.inventory, "-e", "@" + LAB_VARS]
        if overrides:
            argv += ["-e", json.dumps(overrides)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        return [*argv, *playbooks]

    def playbook(self, *playbooks, check=False, **overrides):
        try:
            proc = subprocess.run(
                self.argv(*playbooks, check=check, **overrides),
                cwd=REPO,
                env=PLAYBOOK_ENV,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
        except subprocess.TimeoutExpired as exc:
            raise self.timed_out("ansible-playbook " + " ".join(playbooks), exc) from None
        return Run(proc, self.name)

    def converge(self, *playbooks, **overrides):
        run = self.playbook(*playbooks, **overrides)
        assert run.rc == 0 and run.failures == 0, run
        return run

    def at(self, state):
        """Bring the host to 'l1' (layer 1 only, empty pool), 'l2' (layer 2 converged) or
        'converged' (layers 2 and 4 with the lab's settings), unless it is there already."""
        order = ["l1", "l2", "converged"]
        if self.state == "wedged":
            self.remove()
            self.start()
        if self.state == state:
            return
        if self.state not in order or order.index(self.state) > order.index(state):
            self.sh(RESET_SCRIPT)
            self.state = "l1"
        if state != "l1":
            self.converge(L2) if state == "l2" else self.converge(L2, L4)
            self.state = state
        self.baseline.setdefault(state, self.normalised())

    def normalised(self):
        """The snapshot with mounts sorted (a restored mount comes back later in the table)."""
        snap = self.snapshot()
        snap["mounts"] = sorted(snap["mounts"].splitlines())
        return snap

    def restored(self, state):
        """After a test's own clean-up: keep `state` when the host provably is there again."""
        self.state = state if self.normalised() == self.baseline.get(state) else "dirty"


def boot_host(tmp_path_factory, prefix):
    """A new host container booted from the test bed's host image, as a new machine is (no layer
    applied), with a zfs-fuse pool as its disk: its name and inventory file."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    started = docker(
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        *lib_sh("host_run_opts").split(),
        lib_sh("host_image"),
        check=False,
    )
    if started.returncode != 0:
        docker("rm", "-f", "-v", name, check=False)
        skip_or_fail(f"could not start a host container: {started.stderr.strip()}")
    try:
        state = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.25)
        assert state in ("running", "degraded"), f"{name} did not boot: {state!r}"
        docker("exec", name, "strata-lab-pool", POOL, "512M")
    except BaseException:
        docker("rm", "-f", "-v", name, check=False)
        raise
    inventory = tmp_path_factory.mktemp("inventory") / "hosts.ini"
    inventory.write_text(
        "[strata_hosts]\n"
        f"{name} ansible_connection=community.docker.docker ansible_python_interpreter=/usr/bin/python3\n"
    )
    return name, str(inventory)


@contextlib.contextmanager
def host_container(tmp_path_factory, prefix, layers=()):
    """A Host on a new host container with ``layers`` converged; removed afterwards."""
    skip_or_fail(docker_problem())
    machine = Host(lambda: boot_host(tmp_path_factory, prefix), layers)
    try:
        machine.start()
        yield machine
    finally:
        machine.remove()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with host_container(tmp_path_factory, "strata-it", layers=(L1,)) as machine:
        yield machine


def refused(node, *playbooks, **overrides):
    """Run playbooks that must fail; assert nothing changed; return the run."""
    before = node.snapshot()
    run = node.playbook(*playbooks, **overrides)
    after = node.snapshot()
    assert run.rc != 0 and run.failures, f"expected a failure, got {run}"
    assert run.changed == 0, f"a refused run reported changes: {run}"
    for what in SNAPSHOT:
        assert after[what] == before[what], f"{what} changed although the run failed: {run}"
    return run


def dry(node, *playbooks, **overrides):
    """Run playbooks in check mode: they must succeed and change nothing; return the run."""
    before = node.snapshot()
    run = node.playbook(*playbooks, check=True, **overrides)
    after = node.snapshot()
    assert run.rc == 0 and run.failures == 0, f"check mode failed: {run}"
    for what in SNAPSHOT:
        assert after[what] == before[what], f"{what} changed in check mode: {run}"
    return run


def says(msg, *parts):
    for part in parts:
        assert part.lower() in msg.lower(), f"{part!r} missing from the failure message:\n{msg}"


# --- layer 1 converged, nothing of layer 2 yet -------------------------------------------------


def test_missing_pool_is_refused_by_layer_2(node):
    node.at("l1")
    run = refused(node, L2, strata_pool="nopool")
    says(
        run.msg,
        "'nopool'",
        "not imported",
        "should be an ONLINE pool",
        "Layer 1",
        "zpool create",
        "Nothing was changed",
    )


def test_dataset_outside_the_pool_is_refused(node):
    node.at("l1")
    run = refused(node, L2, strata_cluster_root_dataset="elsewhere/DATA/srv/kind")
    says(
        run.msg,
        "elsewhere/DATA/srv/kind",
        ROOT,
        "outside strata_pool lab",
        "lab/",
        "inventory",
        "layer 2",
        "Nothing was changed",
    )


def test_layer_1_check_mode_after_converge_changes_nothing(node):
    node.at("l1")
    run = dry(node, L1)
    assert run.changed == 0, run


def test_layer_1_check_mode_with_changed_settings_reports_and_changes_nothing(node):
    node.at("l1")
    run = dry(
        node,
        L1,
        base_system_docker_daemon_config={"live-restore": False},
        base_system_sysctl={"vm.max_map_count": 2000000},
    )
    assert run.changed > 0, run
    assert "Write the docker daemon config" in run.changed_tasks, run


@pytest.mark.parametrize("trap", ["files", "dataset"])
def test_layer_2_refuses_a_cluster_root_that_holds_something_else(node, trap):
    """The same refusal as layer 4's: found from the mount table and device numbers, a populated
    plain /srv/kind on the root file system (or another dataset there) would be hidden by the
    cluster-root dataset's mount."""
    node.at("l1")
    if trap == "files":
        node.sh(f"mkdir -p {ROOT} && echo data > {ROOT}/ledger-file")
        expected = f"{ROOT} is a plain directory with files on / but should be the ZFS dataset {ROOT_DS}"
    else:
        node.sh(f"zfs create -o mountpoint={ROOT} {POOL}/trap")
        expected = f"{ROOT} is the ZFS dataset {POOL}/trap but should be {ROOT_DS}"
    try:
        run = refused(node, L2)
        says(run.msg, expected, "Layer 2 cannot converge", "layer2_host_storage.yml", "Nothing was changed")
    finally:
        if trap == "dataset":
            node.sh(f"for i in $(seq 30); do zfs destroy -r {POOL}/trap && break; sleep 0.3; done")
        node.sh(f"rm -rf {ROOT}")
        node.restored("l1")


def test_layer_2_check_mode_on_a_layer_1_host_reports_and_changes_nothing(node):
    node.at("l1")
    run = dry(node, L2)
    assert "Ensure the cluster-root dataset" in run.changed_tasks, run


# --- layer 2 converged, nothing of layer 4 yet -------------------------------------------------


def test_layer_4_check_mode_on_a_layer_2_host_reports_and_changes_nothing(node):
    node.at("l2")
    run = dry(node, L4)
    assert "Ensure the workload dataset and its children" in run.changed_tasks, run
    assert any("fstab" in task for task in run.changed_tasks), run


def test_trap_plain_directory_with_files_on_the_parent_dataset(node):
    node.at("l2")
    node.sh(f"mkdir -p {WL} && echo key > {WL}/validator-keypair.json")
    try:
        run = refused(node, L4)
        says(
            run.msg,
            f"{WL} is a plain directory with files on {ROOT_DS}",
            f"should be the ZFS dataset {WL_DS}",
            "layer4_workload_storage.yml",
            "Nothing was changed",
        )
    finally:
        node.sh(f"rm -rf {WL}")
        node.restored("l2")


def test_trap_another_dataset_mounted_where_the_workload_dataset_belongs(node):
    node.at("l2")
    # The same path string as the expected layout; only the mount table tells them apart.
    node.sh(f"zfs create -o mountpoint={WL} {POOL}/trap && echo x > {WL}/ledger-file")
    try:
        run = refused(node, L4)
        says(
            run.msg,
            f"{WL} is the ZFS dataset {POOL}/trap",
            f"should be {WL_DS}",
            "layer4_workload_storage.yml",
            "Nothing was changed",
        )
    finally:
        node.sh(f"for i in $(seq 30); do zfs destroy -r {POOL}/trap && break; sleep 0.3; done; rmdir {WL}")
        node.restored("l2")


def test_layer_4_run_prints_no_deprecation_warnings(node):
    """ansible-core 2.19 prints a deprecation for a module that passes warnings to exit_json."""
    node.at("l2")
    run = node.converge(L4)
    assert any(
        task.startswith("Mount the ramdisk where nothing is mounted yet") for task in run.changed_tasks
    ), run
    assert run.deprecations == [], run.deprecations
    assert run.warnings == [], run.warnings
    assert "DEPRECATION WARNING" not in run.raw, run.raw
    node.state = "converged"
    node.baseline.setdefault("converged", node.normalised())


# --- layers 2 and 4 converged ------------------------------------------------------------------


# "0" would be an unlimited tmpfs to the kernel.
@pytest.mark.parametrize("size", ["lots", "1.5G", "-64M", "0"])
def test_ramdisk_size_that_is_not_a_size(node, size):
    node.at("converged")
    run = refused(node, L4, strata_ramdisk_size=size)
    says(
        run.msg,
        f"strata_ramdisk_size {size}",
        "is not a size",
        "should be a whole number of bytes",
        RAMDISK,
        "inventory",
        "layer4_workload_storage.yml",
        "Nothing was changed",
    )


def test_ramdisk_bigger_than_memory(node):
    node.at("converged")
    run = refused(node, L4, strata_ramdisk_size="64T")
    says(
        run.msg,
        "strata_ramdisk_size 64T",
        "exceeds the host memory",
        "should be at most",
        "MiB",
        RAMDISK,
        "layer4_workload_storage.yml",
        "Nothing was changed",
    )


def test_layer_2_check_mode_with_changed_settings(node):
    node.at("converged")
    assert dry(node, L2).changed == 0
    run = dry(node, L2, host_storage_cluster_root_properties={"compression": "on", "atime": "off"})
    assert "Ensure the cluster-root dataset" in run.changed_tasks, run


def test_layer_4_check_mode_with_changed_settings(node):
    node.at("converged")
    assert dry(node, L4).changed == 0
    run = dry(
        node,
        L4,
        strata_ramdisk_size="96M",
        strata_workload_datasets=["ledger", "snapshots", "log", "accounts"],
    )
    assert "Ensure the workload dataset and its children" in run.changed_tasks, run
    assert any("fstab" in task for task in run.changed_tasks), run


ENSURE_TASKS = {"Ensure the cluster-root dataset", "Ensure the workload dataset and its children"}


def test_zfs_dataset_runs_only_when_the_read_plans_a_change(node):
    """Layers 2 and 4 plan their datasets in their one read (storage_info's zfs_plan, zfs_dataset's
    own planner): a converged run runs no zfs_dataset, and a property changed behind their back
    is put back by zfs_dataset."""
    node.at("converged")
    run = node.converge(L2, L4)
    assert run.changed == 0 and set(run.skipped_tasks) >= ENSURE_TASKS, run
    atime_off = {
        "host_storage_cluster_root_properties": {"atime": "off"},
        "workload_storage_dataset_properties": {"atime": "off"},
    }
    try:
        node.converge(L2, L4, **atime_off)
        node.sh(f"zfs set atime=on {ROOT_DS} && zfs set atime=on {WL_DS}")
        run = node.converge(L2, L4, **atime_off)
        assert set(run.changed_tasks) >= ENSURE_TASKS, run
        assert node.sh(f"zfs get -H -o value atime {ROOT_DS} {WL_DS}").split() == ["off", "off"]
        again = node.converge(L2, L4, **atime_off)
        assert again.changed == 0 and set(again.skipped_tasks) >= ENSURE_TASKS, again
    finally:
        node.sh(f"zfs inherit -r atime {ROOT_DS}")
        node.restored("converged")


def test_resize_of_a_ramdisk_holding_files_keeps_them(node):
    node.at("converged")
    files = f"{RAMDISK}/accounts/a.bin {RAMDISK}/marker"
    node.sh(f"head -c 1048576 /dev/urandom > {RAMDISK}/accounts/a.bin && echo keep > {RAMDISK}/marker")
    sums = node.sh(f"md5sum {files}")
    try:
        for size, kib in (("96M", 98304), ("32M", 32768)):
            run = node.converge(L4, strata_ramdisk_size=size)
            assert run.changed > 0, run
            assert node.sh(f"md5sum {files}") == sums, f"files on the ramdisk lost by the resize to {size}"
            assert f"size={kib}k" in node.sh(f"findmnt -rn -o OPTIONS {RAMDISK}")
            assert f"size={size}," in node.sh("cat /etc/fstab")
            assert len(node.sh(f"findmnt -rn {RAMDISK}").splitlines()) == 1, "a second tmpfs was stacked"
            assert node.converge(L4, strata_ramdisk_size=size).changed == 0, "not idempotent"
        node.converge(L4)
        assert node.sh(f"md5sum {files}") == sums
    finally:
        node.sh(f"rm -f {files}")
        node.restored("converged")


def test_path_that_is_a_dataset_of_another_parent(node):
    node.at("converged")
    ledger = f"{WL}/ledger"
    node.sh(
        f"for i in $(seq 30); do zfs destroy {WL_DS}/ledger && break; sleep 0.3; done; "
        f"zfs create -o mountpoint=none {POOL}/stray && zfs create -o mountpoint={ledger} {POOL}/stray/ledger"
    )
    try:
        run = refused(node, L4)
        says(
            run.msg,
            f"{ledger} is the ZFS dataset {POOL}/stray/ledger",
            f"should be {WL_DS}/ledger",
            "layer4_workload_storage.yml",
            "Nothing was changed",
        )
    finally:
        node.sh(
            f"for i in $(seq 30); do zfs destroy -r {POOL}/stray && break; sleep 0.3; done; "
            f"zfs create {WL_DS}/ledger"
        )
        node.restored("converged")


@pytest.mark.parametrize("other", ["zfs", "bind"])
def test_ramdisk_path_already_used_by_another_mount(node, other):
    node.at("converged")
    node.sh(f"umount {RAMDISK}")
    if other == "zfs":
        node.sh(f"zfs create -o mountpoint={RAMDISK} {POOL}/other")
        expected = f"{RAMDISK} is already used by fuse.zfs {POOL}/other but should be a tmpfs"
    else:
        node.sh(f"mkdir -p /var/tmp/other && mount --bind /var/tmp/other {RAMDISK}")
        expected = f"{RAMDISK} is already used by "
    try:
        run = refused(node, L4)
        says(
            run.msg,
            expected,
            "should be a tmpfs",
            "layer4_workload_storage.yml",
            "Nothing was changed",
        )
    finally:
        if other == "zfs":
            node.sh(f"for i in $(seq 30); do zfs destroy -r {POOL}/other && break; sleep 0.3; done")
        else:
            node.sh(f"umount {RAMDISK} && rmdir /var/tmp/other")
        node.sh(f"mount {RAMDISK} && mkdir -p {RAMDISK}/accounts")
        node.restored("converged")


def test_files_in_the_ramdisk_directory_that_the_tmpfs_would_hide(node):
    node.at("converged")
    node.sh(f"umount {RAMDISK} && echo stale > {RAMDISK}/accounts.tar")
    try:
        run = refused(node, L4)
        says(
            run.msg,
            f"{RAMDISK} is a plain directory with files on {WL_DS}",
            "that a tmpfs mounted there would hide",
            "layer4_workload_storage.yml",
            "Nothing was changed",
        )
    finally:
        node.sh(f"rm -f {RAMDISK}/accounts.tar && mount {RAMDISK} && mkdir -p {RAMDISK}/accounts")
        node.restored("converged")
