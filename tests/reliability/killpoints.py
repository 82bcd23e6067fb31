"""The kill-point harness of the reliability sweep (issue 20 item 2): ``kill -9`` a real module run at a
point the test chooses, deterministically (never after a sleep), then let the test run it again.

Ways to choose the point:

    ToolTrap(tmp, "zfs", at=K, after=True, counts=("create", "set"), last="pool/ds")
        a wrapper directory for the front of the module's PATH: its ``zfs`` counts the calls whose
        first argument is in ``counts`` (all calls when None; and whose last argument is ``last``,
        when given) and, at call K, runs the real tool (``real``, default the first on PATH) when
        after=True, not when after=False, then SIGKILLs the module process (the nearest ancestor
        whose command line holds ``match``; None: the caller) and everything below it.
        ``trap.calls`` lists every call seen; ``trap.files()`` can be copied into a host container
        (python="/usr/bin/python3").
    start_module(name, args, env=..., stop_after=("function", n, "module_utils/pkg/"))
        the module run as Ansible runs it (its arguments on stdin); with stop_after it SIGSTOPs
        itself when that function of our module_utils returns for the n-th time: wait_stopped()
        then kill_tree() kills it exactly there.
    KillOnRequest(at=K, after=..., counts=...)
        for HTTP stand-ins: ``hit(method, path, answer)`` counts requests and SIGKILLs the module at the K-th
        (before it is answered, or after the answer took effect and before the module reads it).
    wait_fraction(read, fraction)
        for progress / control files: returns once read() reports at least that fraction done.
"""

import contextlib
import json
import os
import signal
import sys
import threading
import time

from tests.integration.conftest import REPO, start_module, wait_stopped

__all__ = ["start_module", "wait_stopped"]  # the harness's, from tests/integration/conftest.py

TESTBED = os.path.join(REPO, "tests", "testbed")

# The wrapper a ToolTrap puts first on PATH. Its settings come from the JSON file beside it.
WRAPPER = r"""
import fcntl, json, os, signal, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
conf = json.load(open(os.path.join(here, ".trap.json")))
argv = sys.argv[1:]
counted = conf["counts"] is None or (argv[:1] and argv[0] in conf["counts"])
counted = counted and (conf["last"] is None or (argv and argv[-1] == conf["last"]))
with open(os.path.join(here, ".calls"), "a+") as log:
    fcntl.flock(log, fcntl.LOCK_EX)
    log.seek(0)
    number = sum(1 for line in log if json.loads(line)["counted"]) + (1 if counted else 0)
    hit = bool(counted) and number == conf["at"]
    log.write(json.dumps({"argv": argv, "counted": bool(counted), "number": number, "hit": hit}) + "\n")
if not hit:
    os.execv(conf["real"], [conf["real"], *argv])
rc = subprocess.run([conf["real"], *argv], check=False).returncode if conf["after"] else None


def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode(errors="replace")


target = os.getppid()  # match None: the caller itself (a pipelined module is a bare "python3")
while conf["match"] is not None and target > 1 and conf["match"] not in cmdline(target):
    target = parent(target)
if target <= 1:
    sys.exit("killpoint: no ancestor matches " + conf["match"])
children = {}
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            children.setdefault(parent(int(entry)), []).append(int(entry))
        except OSError:
            pass
doomed, todo = [], [target]
while todo:
    pid = todo.pop()
    doomed.append(pid)
    todo.extend(children.get(pid, []))
with open(os.path.join(here, ".killed"), "w") as out:
    json.dump({"pid": target, "rc_of_real_call": rc, "argv": argv}, out)
for pid in doomed:
    if pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
os.kill(os.getpid(), signal.SIGKILL)
"""


class ToolTrap:
    """A directory with a wrapper for ``tool`` that kills the module at its K-th counted call."""

    def __init__(
        self,
        directory,
        tool,
        *,
        at=1,
        after=True,
        counts=None,
        last=None,
        real=None,
        match="plugins/modules/",
        python=sys.executable,
    ):
        self.dir, self.tool = str(directory), tool
        os.makedirs(self.dir, exist_ok=True)
        conf = {
            "real": real or _which(tool, exclude=self.dir),
            "at": at,
            "after": after,
            "counts": list(counts) if counts else None,
            "last": last,
            "match": match,
        }
        with open(os.path.join(self.dir, ".trap.json"), "w") as handle:
            json.dump(conf, handle)
        path = os.path.join(self.dir, tool)
        with open(path, "w") as handle:
            handle.write(f"#!{python}\n{WRAPPER}")
        os.chmod(path, 0o755)

    def env(self, base=None):
        """An environment whose PATH starts with the wrapper directory."""
        env = dict(base if base is not None else os.environ)
        env["PATH"] = self.dir + os.pathsep + env.get("PATH", "")
        return env

    def files(self):
        """The wrapper and its settings (what to copy elsewhere, e.g. into a host container)."""
        return [os.path.join(self.dir, name) for name in (self.tool, ".trap.json")]

    @property
    def calls(self):
        try:
            with open(os.path.join(self.dir, ".calls")) as handle:
                return [json.loads(line) for line in handle]
        except FileNotFoundError:
            return []

    @property
    def killed(self):
        """What the wrapper killed ({"pid", "argv", "rc_of_real_call"}), None when it never fired."""
        try:
            with open(os.path.join(self.dir, ".killed")) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None


def _which(tool, exclude):
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin"]:
        path = os.path.join(directory, tool)
        if directory != exclude and os.access(path, os.X_OK):
            return path
    raise AssertionError(f"{tool} is not installed")


def finish(proc, timeout=420):
    """(returncode, the module's JSON result or None, stderr). The wait outlasts the modules' own
    timeouts in these tests (runner_isolation's rollout_timeout is 300 s), so a module that waits
    too long ends with its own message, which names what it waited for."""
    out, err = proc.communicate(timeout=timeout)
    try:
        return proc.returncode, json.loads(out), err
    except ValueError:
        return proc.returncode, None, out + err


def assert_killed(proc, timeout=300):
    """The run ended by SIGKILL (not by itself): returns its stderr."""
    rc, result, err = finish(proc, timeout)
    assert rc == -signal.SIGKILL, f"the module was not killed (rc {rc}): {result} {err[-2000:]}"
    return err


def kill_tree(proc):
    """SIGKILL the module's whole session (its process group: it and what it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class KillOnRequest:
    """For an HTTP stand-in: counts requests (those ``counts(method, path)`` accepts) and SIGKILLs the
    module's process group at the K-th, before answering it (after=False) or once the answer took
    effect (after=True: the module never reads it)."""

    def __init__(self, at, *, after=False, counts=None):
        self.at, self.after, self.counts = at, after, counts or (lambda method, path: True)
        self.pid = None
        self.seen = []
        self.fired = threading.Event()
        self._lock = threading.Lock()

    def hit(self, method, path, answer):
        """Wraps one request: ``answer()`` applies it and returns what the handler sends."""
        with self._lock:
            counted = self.counts(method, path) and not self.fired.is_set()
            if counted:
                self.seen.append((method, path))
            fire = counted and len(self.seen) == self.at and self.pid is not None
        if fire and not self.after:
            self._kill()
        result = answer()
        if fire and self.after:
            self._kill()
        return result

    def _kill(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.fired.set()


def wait_fraction(proc, read, fraction, timeout=120):
    """Polls read() -> (done, total) until done/total >= fraction; returns that fraction. Fails when the
    module ended first (the data is then too small or the rate limit too high for the point)."""
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        done, total = read()
        if total:
            seen = done / total
            if seen >= fraction:
                return seen
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended before {fraction:.0%} (last seen {seen:.0%}): {proc.communicate()}"
            )
        time.sleep(0.05)
    raise AssertionError(f"no progress of {fraction:.0%} within {timeout} s (last seen {seen:.0%})")
