"""Iterative dumps: criu pre-dump passes before the final dump, and where they are refused."""

import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.dump import Dumper, pre_dump_warnings
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.module import run as run_module_logic
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from tests.unit.fakes.run import FakeRun

PID = os.getpid()
# What CRIU 4.1 prints on a kernel without soft-dirty bits (seen on the test machine).
NO_DIRTY_TRACK = "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n"


def test_pre_dump_args_track_memory_and_chain_to_the_previous_images():
    first = criu.build_dump_args("criu", 42, "/d/pre-1", [], pre_dump=True, log_file="pre-dump.log")
    assert first[:9] == [
        "criu",
        "pre-dump",
        "--tree",
        "42",
        "--images-dir",
        "/d/pre-1",
        "--log-file",
        "pre-dump.log",
        "-v4",
    ]
    assert "--track-mem" in first and "--leave-running" not in first and "--prev-images-dir" not in first
    second = criu.build_dump_args("criu", 42, "/d/pre-2", [], pre_dump=True, prev_images_dir="../pre-1")
    assert second[second.index("--prev-images-dir") + 1] == "../pre-1"
    final = criu.build_dump_args("criu", 42, "/d", ["--external", "mnt[/x]:x"], prev_images_dir="pre-2")
    assert final[1] == "dump" and "--leave-running" in final and "--track-mem" in final
    assert final[final.index("--prev-images-dir") + 1] == "pre-2"
    plain = criu.build_dump_args("criu", 42, "/d", [])
    assert "--track-mem" not in plain and "--prev-images-dir" not in plain


def plan_for(tmp_path, pre_dumps):
    dump_dir = str(tmp_path / "app-20250101T000000.000Z")
    pre = [
        criu.build_dump_args(
            "criu",
            PID,
            os.path.join(dump_dir, f"pre-{n}"),
            [],
            pre_dump=True,
            prev_images_dir=f"../pre-{n - 1}" if n > 1 else None,
            log_file="pre-dump.log",
        )
        for n in range(1, pre_dumps + 1)
    ]
    return {
        "dump_dir": dump_dir,
        "target": {"pid": PID},
        "gpu": {"taken": False, "path": "none", "cuda_pids": [], "states": []},
        "freezer": None,
        "argv": criu.build_dump_args("criu", PID, dump_dir, [], prev_images_dir=f"pre-{pre_dumps}"),
        "pre_argvs": pre,
        "env": None,
    }


def params(**overrides):
    base = {"images_dir": None, "leave_running": True, "cuda_lock_timeout": 10, "pre_dumps": 2}
    base.update(overrides)
    return base


def test_pre_dumps_run_in_order_into_their_own_directories_before_the_final_dump(tmp_path):
    seen_dirs = []

    def fake_criu(argv, **_kw):
        images_dir = argv[argv.index("--images-dir") + 1]
        seen_dirs.append((argv[1], os.path.isdir(images_dir)))
        return 0, "", ""

    run = FakeRun(criu=fake_criu)
    plan = plan_for(tmp_path, 2)
    ticks = iter(range(100))
    Dumper(params(), False, run, clock=lambda: float(next(ticks))).dump(plan)
    assert run.programs() == [("criu", "pre-dump"), ("criu", "pre-dump"), ("criu", "dump")]
    assert seen_dirs == [("pre-dump", True), ("pre-dump", True), ("dump", True)]
    assert plan["pre_dump_s"] == [1.0, 1.0]
    # the owner record stays until the manifest is written (Dumper.run_state)
    assert sorted(os.listdir(plan["dump_dir"])) == [mf.OWNER, "descriptors.json", "pre-1", "pre-2"]


def test_a_failed_pre_dump_never_freezes_for_the_final_dump_and_leaves_nothing(tmp_path):
    def fake_criu(argv, **_kw):
        return (1, "", "Pre-dumping FAILED") if argv[1] == "pre-dump" else (0, "", "")

    run = FakeRun(criu=fake_criu)
    plan = plan_for(tmp_path, 2)
    with pytest.raises(criu.CriuDumpFailed, match=f"criu pre-dump of PID {PID} failed .*process runs on"):
        Dumper(params(), False, run).dump(plan)
    assert run.programs() == [("criu", "pre-dump")]
    assert not os.path.exists(plan["dump_dir"])


def test_a_kernel_without_dirty_tracking_is_named_with_criu_s_own_words():
    run = FakeRun(criu=lambda argv, **kw: (1, "", NO_DIRTY_TRACK))
    with pytest.raises(criu.PreDumpUnsupported) as caught:
        criu.check_dirty_tracking(run, "/usr/sbin/criu")
    assert run.calls[0][0] == ["/usr/sbin/criu", "check", "--feature", "mem_dirty_track"]
    message = str(caught.value)
    assert "Dirty tracking is OFF" in message and "CONFIG_MEM_SOFT_DIRTY" in message
    assert "pre_dumps: 0" in message


def test_dirty_tracking_that_works_lets_the_dump_go_on():
    criu.check_dirty_tracking(FakeRun(criu=lambda argv, **kw: (0, "Looks good.\n", "")), "criu")


def test_cuda_processes_are_refused_before_criu_is_asked(tmp_path):
    run = FakeRun(criu=lambda argv, **kw: (0, "", ""))
    gpu_facts = {"taken": True, "path": "cuda-checkpoint", "cuda_pids": [PID]}
    with pytest.raises(criu.PreDumpUnsupported, match="CUDA processes"):
        Dumper(params(), False, run)._check_pre_dump("criu", gpu_facts)
    assert run.calls == []


def test_a_negative_count_is_refused():
    with pytest.raises(InvalidArgument, match="pre_dumps must be 0"):
        run_module_logic({"keep": 1, "pre_dumps": -1, "cuda_lock_timeout": 10}, False, None)


def test_a_final_dump_that_wrote_most_pages_warns_that_the_pre_dumps_saved_little():
    # what a process writing one byte in every 20th page under transparent huge pages left
    # (bench/bench_predump.py, a 1 GiB holder in the guest: its final dump wrote 262,187 pages)
    scattered = {"pages_scanned": 268_000, "pages_written": 262_187, "frozen_s": 7.229}
    (warning,) = pre_dump_warnings(scattered, 1)
    assert "262187 of the 268000 pages" in warning and "(98%)" in warning and "7.229 s" in warning
    assert "transparent huge pages" in warning and "pre_dumps: 0" in warning
    # the hot 5 % in 2 MiB blocks: the pre-dump did its work
    assert pre_dump_warnings({"pages_scanned": 37_920, "pages_written": 2_084, "frozen_s": 0.18}, 2) == []
    # a plain dump writes every page and is not asked about
    assert pre_dump_warnings(scattered, 0) == []
    assert pre_dump_warnings({"pages_scanned": None, "pages_written": None}, 1) == []
