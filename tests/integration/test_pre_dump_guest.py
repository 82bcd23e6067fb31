"""pod_checkpoint's pre_dumps on a kernel that tracks dirty memory, end to end.

This machine's kernel has no soft-dirty bits, so CRIU's pre-dump cannot run on it (the module's
refusal there is tested in test_pod_checkpoint.py). Here the same CRIU 4, Python and checkout run in
a QEMU guest on Debian's own kernel (tests/testbed/guest_vm.py), and tests/integration/
guest_pre_dump.py runs the module through ``ansible localhost`` with two pre-dumps on a process
that keeps 5 % of its pages hot, then restores the final dump with ``criu restore``; and once on a
process whose writes are spread over every transparent huge page, where the module must warn.

Needs: root, qemu-system-x86 and busybox-static (tests/testbed/up installs them), the Debian kernel
package (tests/testbed/vm/build fetches it), CRIU 4 (tests/testbed/up). Without them the test
fails when CI=true and is skipped otherwise.
"""

import json
import os
import sys

import guest_vm  # tests/testbed, on sys.path by conftest
import pytest

from .conftest import REPO, TESTBED_BIN, skip_or_fail

CRIU = os.environ.get("STRATA_CRIU", os.path.join(TESTBED_BIN, "criu"))
GUEST_SCRIPT = os.path.join(REPO, "tests", "integration", "guest_pre_dump.py")

# The guest is an emulated machine (QEMU TCG) that keeps a core busy for a minute or more: it runs
# alone after the parallel suite (marker exclusive), not beside tests that wait on timeouts.
pytestmark = [pytest.mark.needs("criu"), pytest.mark.exclusive]


@pytest.fixture(scope="module")
def guest_report():
    """guest_pre_dump.py's report, from one guest run for both tests."""
    skip_or_fail(guest_vm.problem())
    if not os.access(CRIU, os.X_OK):
        skip_or_fail(f"no CRIU at {CRIU} (tests/testbed/up installs CRIU 4 there)")
    ran = guest_vm.run(
        [sys.executable, GUEST_SCRIPT, CRIU],
        memory_mib=1536,
        timeout=600,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        cwd=REPO,
    )
    lines = [line for line in ran.output.splitlines() if line.startswith("guest-pre-dump-result ")]
    assert ran.returncode == 0 and lines, ran.output[-4000:]
    return json.loads(lines[-1].split(" ", 1)[1])


def test_pre_dumps_then_final_dump_restore_the_whole_memory(guest_report):
    report = guest_report
    result = report["result"]
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    # two pre-dumps while the process ran, each naming the one before; the final dump names the last
    assert [argv[1] for argv in result["pre_dump_commands"]] == ["pre-dump", "pre-dump"]
    assert report["links"] == {"parent": "pre-2", "pre-2/parent": "../pre-1"}
    manifest = result["manifest"]
    assert len(manifest["pre_dumps"]) == 2 and all(p["wall_s"] > 0 for p in manifest["pre_dumps"])
    assert result["frozen_s"] == manifest["stats"]["frozen_s"] > 0
    # the final dump wrote what changed since the second pre-dump: the hot 5 % (and the holder's
    # own interpreter pages), not the process's memory
    assert 0 < manifest["stats"]["pages_written"] < report["pages"] * 0.25, manifest["stats"]
    assert report["ran_on_after_dump"] is True
    # restored from the chain: the cold pages, which only the first pre-dump copied, came back
    assert report["restore_rc"] == 0, report.get("restore_log")
    assert report["checksum_after"] == report["checksum_before"]
    # no warning where the pre-dumps did their work
    assert not result.get("warnings"), result.get("warnings")


def test_pre_dumps_that_saved_little_are_named_in_a_warning(guest_report):
    result = guest_report["scattered"]
    assert result.get("failed") is not True, result
    stats = result["manifest"]["stats"]
    # one byte in every 20th 4 KiB page: the kernel (THP "always" on Debian) tracks each 2 MiB as one
    assert stats["pages_written"] > stats["pages_scanned"] * 0.5, stats
    (warning,) = result["warnings"]
    assert warning.startswith("the pre-dumps saved little: the final dump still wrote")
    assert "transparent huge pages" in warning and "pre_dumps: 0" in warning
