"""What the benchmarks on the lab control plane share (bench_shutdown.py, bench_health.py): the
children's environment, a private temporary directory, a child process timed and measured by
wait4, percentiles and the growth lines (x10 work -> xN time).

Not a benchmark itself: bench/run runs bench/bench_*.py only.
"""

import atexit
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
# The benchmarks import the checkout's collection and the test bed's helpers (tests/testbed).
sys.path[:0] = [os.path.join(REPO, ".collections"), os.path.join(REPO, "tests", "testbed")]
from testbed_paths import CACHE, kubectl_path  # noqa: E402 - no dependencies beyond os

try:
    from lab_k8s import create_kwok_node, deployment

    from ansible_collections.strata.ops.plugins.module_utils import k8s

    LAB_IMPORT_ERROR = None
except ImportError as lab_import_exc:  # lab_control_plane() says what is missing
    create_kwok_node = deployment = k8s = None
    LAB_IMPORT_ERROR = lab_import_exc
# A step is "linear" while x10 work costs between x7 and x14 time (exponent 0.85-1.15): on two
# shared cores a run-to-run spread of +-20 % is common, so a tighter band would call noise a cause.
LINEAR_ABOVE, WORSE_ABOVE = 0.85, 1.15


def bench_env():
    """The environment of every child: this venv's ansible, the repo's ansible.cfg."""
    return dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
    )


def module_env(env=None):
    """``env`` (default bench_env()) with the checkout's collection importable, as a module
    process run by hand (``python plugins/modules/NAME.py ARGS``) needs it."""
    return dict(env or bench_env(), PYTHONPATH=os.path.join(REPO, ".collections"))


def timed_module_run(name, args, env=None):
    """plugins/modules/<name>.py run once as Ansible runs it with pipelining (its arguments on
    stdin): (seconds, result). A ValueError names the module when it printed no JSON or failed."""
    module = os.path.join(REPO, "plugins", "modules", name + ".py")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, module],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": args}),
        capture_output=True,
        text=True,
        env=module_env(env or os.environ),
        check=False,
    )
    seconds = time.monotonic() - started
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise ValueError(f"{name} answered no JSON: {(proc.stdout + proc.stderr)[-2000:]}") from None
    if result.get("failed"):
        raise ValueError(f"{name} failed: {result.get('msg')}")
    return seconds, result


def private_tmpdir(prefix):
    """Temporary files of this run and its children (the client certificates a kubeconfig's
    *-data become, plainconfig.py) under .tmp/ of the checkout, removed at exit: a shared
    machine's /tmp gets cleaned under a long run."""
    root = os.path.join(REPO, ".tmp")
    os.makedirs(root, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix + "-", dir=root)
    os.environ["TMPDIR"] = tempfile.tempdir = path
    atexit.register(shutil.rmtree, path, True)
    return path


def lab_control_plane(kubeconfig, skip, tmp_prefix, need_playbook=True, import_error=None):
    """(client, kubectl) of the lab control plane, or ``skip(reason)``: the checks every benchmark
    on it makes first (the venv's libraries, a kubeconfig that answers, the control plane's own
    kubectl, ansible-playbook beside this Python); ``import_error``: the benchmark's own
    libraries' ImportError, if any."""
    private_tmpdir(tmp_prefix)
    missing = import_error or LAB_IMPORT_ERROR
    if missing is not None:
        skip(f"the kubernetes Python client is missing ({missing}): make venv")
    if not os.path.isfile(kubeconfig):
        skip(f"control plane not available: no kubeconfig at {kubeconfig} (tests/testbed/up controlplane)")
    try:
        client = k8s.get_client(kubeconfig)
    except k8s.K8sError as exc:
        skip(f"control plane not available: {exc}")
    kubectl = kubectl_path()
    if not kubectl:
        skip(f"no kubectl under {CACHE}/controlplane/v1.*/bin (tests/testbed/controlplane/build)")
    if need_playbook and not os.access(os.path.join(BIN, "ansible-playbook"), os.X_OK):
        skip(f"ansible-playbook is not beside {sys.executable} (run with the venv's python: make venv)")
    return client, kubectl


def percentile(values, share):
    """The nearest-rank percentile (share 0.95: p95) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def growth_exponent(size_a, value_a, size_b, value_b):
    """The k of value ~ size^k between two points (1: linear), or None when it is not defined."""
    if size_b <= size_a or value_a <= 0 or value_b <= 0:
        return None
    return math.log(value_b / value_a) / math.log(size_b / size_a)


def growth_lines(label, points, causes=None, unit="s"):
    """'x10 work -> xN time' lines between consecutive (size, value) points; a step that grows
    faster than the work (exponent > 1.15) is named with its cause: ``causes`` is a text, or a
    dict of the larger size -> text."""
    lines = []
    for (size_a, time_a), (size_b, time_b) in zip(points, points[1:]):
        exponent = growth_exponent(size_a, time_a, size_b, time_b)
        if exponent is None:
            continue
        worse = exponent > WORSE_ABOVE
        shape = "worse than linear" if worse else "linear" if exponent > LINEAR_ABOVE else "sublinear"
        line = (
            f"  growth {label}: {size_a:,} -> {size_b:,} ({size_b / size_a:.0f}x work): "
            f"{time_a:.3f} -> {time_b:.3f} {unit}, x10 work -> x{10**exponent:.1f} ({shape})"
        )
        if worse:
            cause = causes.get(size_b) if isinstance(causes, dict) else causes
            line += f"; cause: {cause or 'not known'}"
        lines.append(line)
    return lines


# The reaper between a benchmark and its child: Linux keeps the highest RSS a process had across
# exec (wait4's ru_maxrss), and a child of a benchmark starts as a vfork of the benchmark's own
# 60-150 MiB, so its figure would be the benchmark's. The reaper (python -S, a few MiB) forks the
# child, waits for it and writes: fork time, exit time (CLOCK_MONOTONIC, one clock for every
# process), the wait status and the child's ru_maxrss (KiB).
REAPER = """
import os, sys, time
report = int(sys.argv[1])
started = time.monotonic()
pid = os.fork()
if pid == 0:
    os.close(report)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        os.write(2, f"bench: cannot run {sys.argv[2]}: {exc}\\n".encode())
    os._exit(127)
while True:
    try:
        _pid, status, usage = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
ended = time.monotonic()
os.write(report, f"{started!r} {ended!r} {status} {usage.ru_maxrss}".encode())
"""


class Child:
    """A child process started now; ``wait()`` gives its start and exit times (monotonic, taken
    by REAPER around fork and wait4), exit status and peak RSS (KiB, its own: see REAPER).
    stdout goes to a file (a 1,000-pod result is over a pipe's buffer, and wait4 must not race a
    reader)."""

    def __init__(self, argv, env, tmp, stdout=None):
        self.argv = argv
        self.out = stdout or tempfile.TemporaryFile(dir=tmp)  # noqa: SIM115 - closed with the process
        self.err = tempfile.TemporaryFile(dir=tmp)  # noqa: SIM115
        self.started = time.monotonic()  # the reaper's fork time replaces it at the exit
        report, self._report_w = os.pipe()
        self._report = os.fdopen(report, "rb")
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", REAPER, str(self._report_w), *argv],
            cwd=REPO,
            env=env,
            stdout=self.out,
            stderr=self.err,
            pass_fds=(self._report_w,),
            start_new_session=True,  # wait()'s timeout stops the reaper and the child together
        )
        os.close(self._report_w)
        self.ended = self.rc = self.maxrss_kib = None
        self.thread = threading.Thread(target=self._reap, daemon=True)
        self.thread.start()

    def _reap(self):
        with self._report:
            report = self._report.read().split()
        reaper_rc = self.proc.wait()
        if len(report) != 4:  # the reaper itself failed: its error is in stderr
            self.ended, self.rc, self.maxrss_kib = time.monotonic(), reaper_rc or 1, 0
            return
        self.started, self.ended = float(report[0]), float(report[1])
        self.rc = os.waitstatus_to_exitcode(int(report[2]))
        self.maxrss_kib = int(report[3])

    @property
    def seconds(self):
        """Start to exit (after wait())."""
        return self.ended - self.started

    def wait(self, timeout=900):
        self.thread.join(timeout)
        if self.ended is None:
            os.killpg(self.proc.pid, 9)
            self.thread.join(10)
            raise SystemExit(f"bench: {' '.join(self.argv[:3])} did not end within {timeout} s")
        return self

    def stdout(self):
        self.out.seek(0)
        return self.out.read().decode("utf-8", "replace")

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode("utf-8", "replace")

    def check(self, what):
        if self.rc != 0:
            output = f"{self.stdout()[-3000:]}\n{self.stderr()[-3000:]}"
            raise SystemExit(f"bench: {what} failed (rc {self.rc}):\n{output}")
        return self


def print_profile(path, top=15):
    """The ``top`` functions of a cProfile stats file by cumulative time, as pstats prints them."""
    import io  # noqa: PLC0415 - only with STRATA_BENCH_PROFILE
    import pstats  # noqa: PLC0415

    text = io.StringIO()
    pstats.Stats(path, stream=text).strip_dirs().sort_stats("cumulative").print_stats(top)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    print("\n".join(lines[-(top + 2) :]))
