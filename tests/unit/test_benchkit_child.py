"""bench/benchkit.py's Child: the exit status, times and peak RSS of a benchmark's child are the
child's own, not the benchmark's (Linux keeps a process's highest RSS across exec, and a child
starts as a vfork of its parent)."""

import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import benchkit  # noqa: E402

MIB = 1024


@pytest.fixture
def big_parent():
    """This process made 300 MiB resident, as a benchmark with 1,000 pods' objects is."""
    ballast = bytearray(300 * 1024 * 1024)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    yield ballast
    del ballast


def test_peak_rss_is_the_childs_own(big_parent, tmp_path):
    small = benchkit.Child(["true"], os.environ, str(tmp_path)).wait().check("true")
    assert small.maxrss_kib < 60 * MIB
    grown = benchkit.Child(
        [sys.executable, "-c", "b = bytearray(120 * 2**20); print('made')"], os.environ, str(tmp_path)
    ).wait()
    assert grown.check("python").stdout() == "made\n"
    assert 120 * MIB < grown.maxrss_kib < 250 * MIB


def test_times_are_the_childs(tmp_path):
    child = benchkit.Child(["sleep", "0.3"], os.environ, str(tmp_path)).wait()
    assert child.rc == 0
    assert child.seconds >= 0.3
    assert child.ended > child.started


@pytest.mark.parametrize(
    ("argv", "rc"),
    [(["sh", "-c", "exit 3"], 3), (["sh", "-c", "kill -9 $$"], -9)],
)
def test_exit_status(argv, rc, tmp_path):
    child = benchkit.Child(argv, os.environ, str(tmp_path)).wait()
    assert child.rc == rc
    with pytest.raises(SystemExit, match=rf"bench: shell failed \(rc {rc}\)"):
        child.check("shell")


def test_a_missing_program_is_named(tmp_path):
    child = benchkit.Child([str(tmp_path / "absent")], os.environ, str(tmp_path)).wait()
    assert child.rc == 127
    assert "cannot run" in child.stderr() and "absent" in child.stderr()


def test_timeout_stops_the_child(tmp_path):
    marker = tmp_path / "still-running"
    child = benchkit.Child(["sh", "-c", f"sleep 2; touch {marker}"], os.environ, str(tmp_path))
    with pytest.raises(SystemExit, match=r"did not end within 0\.5 s"):
        child.wait(0.5)
    child.thread.join(5)
    time.sleep(2.5)  # past the child's sleep: it must not have gone on
    assert not marker.exists()
