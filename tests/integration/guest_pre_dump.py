"""The guest side of test_pre_dump_guest.py: run in a QEMU guest whose kernel tracks dirty memory.

A memory holder (tests/testbed/memory_holder.py, 5 % of its pages hot) is dumped by
strata.ops.pod_checkpoint with pre_dumps through ``ansible localhost`` (as an operator runs it),
left running; then it is killed and ``criu restore`` brings the final dump back (CRIU follows the
dump's parent links into the pre-dumps); the restored holder's checksum of its cold pages - the
pages only the first pre-dump copied - must equal the one taken before the dump. Then a holder
that writes one byte of every 20th 4 KiB page (under the kernel's transparent huge pages: every
huge page dirty) is dumped with one pre-dump, which saves little: the module must warn. Prints one
JSON line with what the test checks.

    python3 guest_pre_dump.py CRIU_PATH
"""

import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
import adhoc  # noqa: E402
from guest_vm import SCRATCH  # noqa: E402

HOLDER = os.path.join(REPO, "tests", "testbed", "memory_holder.py")
WORK = os.path.join(SCRATCH, "pre-dump-test")
SIZE = 128 << 20
RESULT_MARK = "guest-pre-dump-result "


def wait_for(path, text, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as handle:
                if text in handle.read():
                    return
        time.sleep(0.1)
    raise SystemExit(f"guest: {what} did not happen within {timeout} s")


def checksum(pid, log, checksum_file, count):
    """The holder's checksum of its cold pages, asked by SIGUSR1 (its count-th answer)."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with open(log) as handle:
            answered = handle.read().count("checked") >= count
        if answered:
            with open(checksum_file) as handle:
                return handle.read()
        time.sleep(0.1)
    raise SystemExit("guest: the holder did not answer SIGUSR1")


def pod_checkpoint(module_args):
    """strata.ops.pod_checkpoint through ansible localhost: the task's result."""
    result, output = adhoc.task_result(
        "pod_checkpoint",
        module_args,
        # ~/.ansible and Ansible's temporary files: the checkout and /root are read-only here
        env={
            "HOME": os.path.join(WORK, "home"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(WORK, "ansible-local"),
            "ANSIBLE_REMOTE_TEMP": os.path.join(WORK, "ansible-remote"),
        },
    )
    if result is None:
        raise SystemExit(f"guest: no result from ansible: {output}")
    return result


def start_holder(log, *options):
    # Output into a file, not a pipe: the restored holder writes to it again.
    with open(log, "w") as out:
        holder = subprocess.Popen(
            [sys.executable, HOLDER, str(SIZE), "--hot-every", "20", *options],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own session: CRIU dumps it without --shell-job
        )
    wait_for(log, "ready", "the holder's fill")
    return holder


def scattered_writes(criu):
    """One pre-dump of a holder whose hot pages are spread over every huge page: the result."""
    holder = start_holder(os.path.join(WORK, "scattered.log"), "--scattered")
    try:
        images = os.path.join(WORK, "scattered")
        return pod_checkpoint({"pid": holder.pid, "images_dir": images, "criu_path": criu, "pre_dumps": 1})
    finally:
        holder.kill()
        holder.wait()


def main():
    criu = sys.argv[1]
    os.makedirs(os.path.join(WORK, "home"), exist_ok=True)
    log, checksum_file = os.path.join(WORK, "holder.log"), os.path.join(WORK, "checksum")
    holder = start_holder(log, "--checksum-file", checksum_file)
    before = checksum(holder.pid, log, checksum_file, 1)
    result = pod_checkpoint(
        {"pid": holder.pid, "images_dir": os.path.join(WORK, "images"), "criu_path": criu, "pre_dumps": 2}
    )
    report = {"result": result, "checksum_before": before, "pages": SIZE // os.sysconf("SC_PAGE_SIZE")}
    if result.get("failed"):
        print(RESULT_MARK + json.dumps(report), flush=True)
        return
    dump_dir = result["checkpoint_dir"]
    report["links"] = {
        name: os.readlink(os.path.join(dump_dir, *name.split("/")))
        for name in ("parent", "pre-2/parent")
        if os.path.islink(os.path.join(dump_dir, *name.split("/")))
    }
    report["ran_on_after_dump"] = holder.poll() is None
    holder.kill()
    holder.wait()
    pidfile = os.path.join(WORK, "restored.pid")
    restore = subprocess.run(
        [criu, "restore", "--images-dir", dump_dir, "--restore-detached", "--pidfile", pidfile,
         "--log-file", "restore.log", "-v4"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report["restore_rc"] = restore.returncode
    if restore.returncode == 0:
        with open(pidfile) as handle:
            restored = int(handle.read())
        report["checksum_after"] = checksum(restored, log, checksum_file, 2)
        os.kill(restored, signal.SIGKILL)
    else:
        with open(os.path.join(dump_dir, "restore.log")) as handle:
            report["restore_log"] = handle.read()[-3000:]
    report["scattered"] = scattered_writes(criu)
    print(RESULT_MARK + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
