"""tests/gpu/run, the GPU checkpoint check, kept runnable: its --self-test here.

The self-test runs every step of the GPU check without a GPU: a CPU worker that maps the unit
tests' fake libcuda (so the module sees a CUDA process), a directory in place of
/proc/driver/nvidia/gpus, and the real CRIU of the test bed for the dump and the restore. It
proves the script and the module's driver-API path around a real criu dump; it proves nothing
about a GPU (docs/gpu-checkpoint.md). Needs root and the test bed's CRIU; fails under CI=true
without them, skips otherwise. Its containerd step starts a containerd of its own from what
tests/gpu/prepare carries (the GPU machine's path): without the test bed's CRI runtime to carry,
that step is skipped and so is this test, after every other step was checked.

The pre-dump step needs the kernel's dirty tracking, which this machine's kernel lacks: the second
test runs that step in the test bed's QEMU guest on Debian's kernel (tests/testbed/guest_vm.py).
"""

import json
import os
import subprocess
import sys
import tarfile

import guest_vm  # tests/testbed, on sys.path by conftest
import pytest

from .conftest import REPO, skip_or_fail


def test_gpu_check_self_test_runs_every_step(tmp_path):
    skip_or_fail(None if os.geteuid() == 0 else "CRIU needs root")
    prepare = [os.path.join(REPO, "tests", "gpu", "prepare")]
    criu_root = subprocess.run(prepare, capture_output=True, text=True, check=False)
    skip_or_fail(None if criu_root.returncode == 0 else "tests/gpu/prepare: " + criu_root.stderr.strip())
    out = tmp_path / "out"
    # python3 is the test's own (it imports ansible): the module-through-Ansible step runs too
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    env = dict(os.environ, OUT=str(out), GPU_CHECK_BUDGET="120", PATH=path)
    argv = [
        os.path.join(REPO, "tests", "gpu", "run"),
        "--self-test",
        "--sizes",
        "0.25",
        "--freeze-gib",
        "0.1",
        "--ansible-gib",
        "0.1",
        "--predump-gib",
        "0.25",
        "--cri-gib",
        "0.1",
        "--images-dir",
        str(tmp_path / "dumps"),
        "--work",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    log = (out / "log.txt").read_text()
    assert proc.returncode == 0, failed_steps(log) + "\n--- the whole log:\n" + log + proc.stderr
    figures = json.loads((out / "figures.json").read_text())
    assert figures["self_test"] is True and figures["result"] == "done"
    assert "No figure here is a GPU figure" in log
    probe = figures["probe"]
    assert probe["criu"]["check"]["rc"] == 0, probe["criu"]
    assert probe["libcuda"]["complete"] is True
    # no cuda-checkpoint here: the one freeze cycle is the driver API's
    assert list(figures["freeze"]["cycles"]) == ["cuda-driver-api"]
    freeze = figures["freeze"]["cycles"]["cuda-driver-api"]
    assert [(s["step"], s["state"]) for s in freeze["states"]] == [
        ("start", "running"),
        ("lock", "locked"),
        ("checkpoint", "checkpointed"),
        ("restore", "locked"),
        ("unlock", "running"),
    ]
    assert freeze["counter_went_on"] and freeze["pattern_ok_after"]
    dump = figures["dumps"]["0.25"]
    # the module's own dump took the driver-API path around the real criu dump
    assert dump["gpu"]["path"] == "cuda-driver-api" and dump["gpu"]["locked_s"] > 0
    assert [s["step"] for s in dump["gpu"]["states"]] == [
        "before dump",
        "lock",
        "checkpoint",
        "restore",
        "unlock",
    ]
    assert dump["images_bytes"] > 0.25 * (1 << 30)
    # the restored process is the dumped one: same memory, counter going on, pattern intact
    assert dump["same_process_state"] and dump["counter_went_on"] and dump["pattern_ok_after_restore"]
    # a freshly started worker would count from 1
    assert dump["counter_first_after_restore"] > 5
    # pod_checkpoint through ansible-core dumped the worker, which ran on; no GPU directory for
    # the module's own process here, so no GPU path
    ansible = figures["ansible"]
    assert ansible["changed"] and ansible["images_bytes"] > 0.1 * (1 << 30), ansible
    assert ansible["gpu"]["path"] == "none" and ansible["counter_went_on"] and ansible["pattern_ok_after"]
    # pre-dump's frozen time where the kernel tracks dirty memory; CRIU's own words where it does not
    predump = figures["predump"]
    assert predump["frozen_ratio"] > 0 if predump["mem_dirty_track"] is True else predump["mem_dirty_track"]
    # the workers' files and CRIU's logs come back packed (the device tool returns 8 files at most)
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert {"freeze.log", "freeze.status.json", "dump-0.25.status.json"} <= set(names), names
    assert any(name.startswith("criu-0.25/") and name.endswith("dump.log") for name in names), names
    assert sorted(os.listdir(out)) == ["figures.json", "log.txt", "logs.tar.gz", "nvidia-smi.txt"]
    assert_containerd_step(figures, names, log, tmp_path)


def failed_steps(log):
    """The entries of the log that say FAILED, each with its continuation lines (a CRIU log, a
    traceback): first in an assertion's message, which CI's excerpt cuts in the middle."""
    entries, current = [], None
    for line in log.splitlines():
        if line.startswith("["):
            current = [line] if "FAILED" in line else None
            if current:
                entries.append(current)
        elif current is not None:
            current.append(line)
    return "\n".join("\n".join(entry) for entry in entries)


def assert_containerd_step(figures, names, log, tmp_path):
    """containerd's checkpoint of the worker in a CRI pod (left running), restored into a new
    container; skips (fails under CI=true) where the step was skipped."""
    cri = figures["containerd"]
    if "skipped" in cri:
        assert figures["skipped"] == {"containerd": cri["skipped"]} and "containerd step SKIPPED" in log
        skip_or_fail("the containerd step: " + cri["skipped"])
    assert "error" not in cri, cri
    # the carried binaries, as on the GPU machine, not the host's
    assert cri["runtime"]["containerd_exe"].startswith(str(tmp_path / "work")), cri["runtime"]
    dumped, restored = cri["dump"], cri["restore"]
    assert dumped["gpu"]["path"] == dumped["manifest_gpu_path"] == "cuda-driver-api", dumped
    assert [(s["step"], s["state"]) for s in dumped["gpu"]["states"]][1:] == [
        ("lock", "locked"),
        ("checkpoint", "checkpointed"),
        ("restore", "locked"),
        ("unlock", "running"),
    ]
    assert dumped["gpu"]["locked_s"] > 0 and dumped["images_bytes"] > 0.1 * (1 << 30)
    # CRIU's own stats, kept from the runc shim's work folder before it went
    assert dumped["criu_stats"]["pages_written"] > 0 and restored["criu_stats"]["pages_restored"] > 0
    # the restored process is another host pid, which the fake libcuda saw first as checkpointed
    assert restored["pid"] != cri["worker_pid"]
    assert [(s["step"], s["state"]) for s in restored["gpu"]["states"]] == [
        ("restore", "locked"),
        ("unlock", "running"),
    ]
    assert restored["count_first"] >= dumped["count_before"] > 5
    assert cri["checks"] == dict.fromkeys(
        [
            "counted_on_after_dump",
            "pattern_ok_after_dump",
            "gpu_path_taken",
            "same_process",
            "counts_on_from_dump",
            "counted_on_after_restore",
            "pattern_ok_after_restore",
        ],
        True,
    )
    # CRIU's logs of containerd's checkpoint (beside the dump's images) and restore (in
    # restored-NEW-criu/ of the dump directory), kept before the step removes the dump
    kept = [n for n in names if n.startswith("containerd-criu-logs/")]
    assert any(n.endswith("images_dump.log") for n in kept) and any(
        n.endswith("restored_restore.log") for n in kept
    ), names
    assert "containerd.log" in names


@pytest.mark.exclusive  # an emulated guest: alone after the parallel suite (test_pre_dump_guest.py)
def test_gpu_check_pre_dump_step_in_the_dirty_tracking_guest():
    skip_or_fail(guest_vm.problem())
    scratch = guest_vm.SCRATCH
    gpu_run = os.path.join(REPO, "tests", "gpu", "run")
    script = (
        f"{gpu_run} --self-test --steps predump --predump-gib 0.25 --work {scratch}/work "
        f"--images-dir {scratch}/dumps >/dev/null 2>&1; echo predump-step-rc=$?; "
        f"echo figures-begin; cat {scratch}/out/figures.json; echo; echo figures-end"
    )
    ran = guest_vm.run(
        ["bash", "-c", script], memory_mib=1536, timeout=300, env={"OUT": f"{scratch}/out"}, cwd=REPO
    )
    output = ran.output.splitlines()
    assert "predump-step-rc=0" in output, ran.output[-3000:]
    figures = "\n".join(output[output.index("figures-begin") + 1 : output.index("figures-end")])
    predump = json.loads(figures)["predump"]
    assert predump["mem_dirty_track"] is True, predump
    # 5 % of the pages dirtied between the pre-dump and the final dump, in whole 2 MiB blocks: the
    # final dump writes about those (under transparent huge pages a scattered 5 % would be ~100 %)
    pages = int(0.25 * 2**30) // os.sysconf("SC_PAGE_SIZE")
    assert pages * 0.04 < predump["final_pages_written"] < pages * 0.15, predump
    assert predump["plain_frozen_s"] > 0 and predump["final_frozen_s"] > 0
