"""A QEMU guest on Debian's own kernel, for what this machine's kernel cannot do.

This machine's kernel has no memory dirty tracking (``criu check --feature mem_dirty_track``:
"Dirty tracking is OFF"), so CRIU's pre-dump cannot run here. Debian bookworm's kernel has it
(CONFIG_MEM_SOFT_DIRTY=y). ``run`` boots that kernel (tests/testbed/vm/build) with this machine's
root file system as the guest's, read-only over 9p (a checkout under /tmp included), a tmpfs at
SCRATCH (the guest's TMPDIR and HOME, its only writable directory) and no network, and runs one
command there as root: the same CRIU, Python and checkout as on the host, on a kernel that tracks
dirty pages.

QEMU emulates the CPU (TCG): /dev/kvm opens on this VM and creates a virtual machine, but a guest
kernel hangs in its decompressor (measured 2026-12-04, ``-cpu host`` and ``qemu64``), so the guest
runs several times slower than the host. Figures measured in it are compared with figures
measured in the same guest only.
"""

import os
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass

from testbed_paths import CACHE

TESTBED = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(TESTBED, "vm", "build")
QEMU = "qemu-system-x86_64"
EXIT_MARK = "strata-guest-exit="
SCRATCH = "/run/strata-guest"  # vm/init mounts a tmpfs on /run and makes it


class GuestError(RuntimeError):
    """The guest did not boot, or did not report its command's exit status."""


@dataclass
class GuestRun:
    returncode: int
    output: str
    kernel: str  # the vmlinuz booted (its directory names the package and version)


def assets(cached=False):
    """kernel, initrd and modules paths (tests/testbed/vm/build fetches and packs them once;
    cached: only when they are there already)."""
    proc = subprocess.run(
        [BUILD, *(["--cached"] if cached else [])], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise GuestError(f"{BUILD} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return found["kernel"], found["initrd"], found["modules"]


def problem():
    """Why no guest can run here (the tests' skip_or_fail), or None. Builds the guest once when
    only it is missing (as tests/testbed/up does)."""
    if os.geteuid() != 0:
        return "the guest exports / over 9p and runs CRIU as root in it: needs root"
    if not shutil.which(QEMU):
        return f"{QEMU} is not installed (tests/testbed/up installs qemu-system-x86)"
    try:
        assets()
    except GuestError as exc:
        return str(exc)
    return None


def qemu_argv(script, memory_mib, cpus, cached):
    kernel, initrd, modules = assets(cached)
    append = f"console=ttyS0 quiet loglevel=3 panic=-1 strata.run={script} strata.modules={modules}"
    # nice: the emulated CPUs take both cores while they run; the test bed's control plane and
    # the tests beside them (make test runs several at once) go first.
    return [
        "nice", "-n", "10",
        QEMU,
        "-accel", "tcg,thread=multi",
        "-cpu", "max",
        "-m", str(memory_mib),
        "-smp", str(cpus),
        "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", kernel,
        "-initrd", initrd,
        "-append", append,
        # The host's root as the guest's, read-only: "remap" keeps inode numbers of the host's
        # other file systems below / from colliding in the guest.
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
    ]  # fmt: skip


def run(argv, *, memory_mib=2048, cpus=2, timeout=600, env=None, cwd=None, cached=False):
    """Run argv as root in a fresh guest; its exit status and console output (the guest's
    stdout and stderr, after the kernel's own lines). cached: boot only what is built already."""
    scripts = os.path.join(CACHE, "vm", "run")
    os.makedirs(scripts, exist_ok=True)
    script = os.path.join(scripts, f"{uuid.uuid4().hex[:12]}.sh")
    # The guest's HOME is its scratch: the test bed's cache is named as on the host.
    variables = {"STRATA_CACHE": CACHE, **(env or {})}
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in variables.items())
    workdir = shlex.quote(os.path.abspath(cwd or os.getcwd()))
    with open(script, "w") as handle:
        handle.write(f"cd {workdir} || exit 125\n{exports}{shlex.join(argv)}\n")
    qemu = qemu_argv(script, memory_mib, cpus, cached)
    try:
        proc = subprocess.run(
            qemu,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GuestError(f"the guest did not finish within {timeout} s: {argv}") from exc
    finally:
        os.unlink(script)
    output = proc.stdout.replace("\r\n", "\n")
    lines = output.splitlines()
    marks = [line for line in lines if line.startswith(EXIT_MARK)]
    if not marks:
        raise GuestError(
            f"the guest ended without the command's exit status (qemu rc={proc.returncode}): "
            f"{proc.stderr.strip()} {output[-2000:]}"
        )
    body = "\n".join(line for line in lines if not line.startswith(EXIT_MARK) and not line.startswith("["))
    return GuestRun(int(marks[-1][len(EXIT_MARK) :]), body, qemu[qemu.index("-kernel") + 1])


def probe(criu):
    """tests/testbed/status: (True, what answered) or (False, why not), changing nothing."""
    try:
        guest = run([criu, "check", "--feature", "mem_dirty_track"], memory_mib=512, timeout=120, cached=True)
    except GuestError as exc:
        return False, str(exc).splitlines()[0]
    said = guest.output.strip().splitlines()[-1:] or [""]
    kernel = os.path.basename(os.path.dirname(guest.kernel))
    return guest.returncode == 0, f"QEMU TCG, {kernel}: criu check --feature mem_dirty_track: {said[0]}"


if __name__ == "__main__":
    import sys

    answered, what = probe(sys.argv[1])
    print(what)
    sys.exit(0 if answered else 1)
