"""The run lock's file logic (module_utils/run_lock.py) and the action plugin's staleness rule."""

import json
import os
import subprocess

import pytest

from ansible_collections.strata.ops.plugins.action import run_lock as action
from ansible_collections.strata.ops.plugins.module_utils import build_lock
from ansible_collections.strata.ops.plugins.module_utils import run_lock as rl
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument


def holder(token, **extra):
    return dict({"token": token, "host": "ctl", "pid": 1, "play": "Layer 4", "user": "op"}, **extra)


def test_a_free_lock_is_taken_and_written_0600(tmp_path):
    taken, current, in_the_way = rl.acquire(str(tmp_path / "locks"), ["strata-ops"], holder("a"))
    path = tmp_path / "locks" / "strata-ops.json"
    assert taken and current["token"] == "a" and in_the_way is None
    assert json.loads(path.read_text())["token"] == "a"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "locks").stat().st_mode & 0o777) == "0o700"


def test_the_holder_takes_it_again_another_run_is_told_who_holds_it(tmp_path):
    rl.acquire(str(tmp_path), ["strata-ops"], holder("a"))
    assert rl.acquire(str(tmp_path), ["strata-ops"], holder("a")) == (True, holder("a"), None)
    taken, current, in_the_way = rl.acquire(str(tmp_path), ["strata-ops"], holder("b"))
    assert not taken and current["token"] == "a" and in_the_way == str(tmp_path / "strata-ops.json")
    assert rl.acquire(str(tmp_path), ["other-lock"], holder("b"))[0]  # another name is another lock


def test_release_and_break_remove_only_the_token_they_name(tmp_path):
    rl.acquire(str(tmp_path), ["strata-ops"], holder("a"))
    assert rl.remove(str(tmp_path), ["strata-ops"], "b") == (False, holder("a"))
    assert (tmp_path / "strata-ops.json").exists()
    assert rl.remove(str(tmp_path), ["strata-ops"], "a") == (True, holder("a"))
    assert not (tmp_path / "strata-ops.json").exists()
    assert rl.remove(str(tmp_path), ["strata-ops"], "a") == (False, None)  # released already


def test_several_names_are_taken_all_or_none_and_released_together(tmp_path):
    rl.acquire(str(tmp_path), ["workload-x"], holder("b"))
    names = ["strata-ops", "workload-x"]
    taken, current, in_the_way = rl.acquire(str(tmp_path), names, holder("a"))
    assert (taken, current["token"], in_the_way) == (False, "b", str(tmp_path / "workload-x.json"))
    assert not (tmp_path / "strata-ops.json").exists()  # none taken while one is another run's
    assert rl.remove(str(tmp_path), ["workload-x"], "b") == (True, holder("b"))
    assert rl.acquire(str(tmp_path), names, holder("a")) == (True, holder("a"), None)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["strata-ops.json", "workload-x.json"]
    assert rl.acquire(str(tmp_path), names, holder("a"))[0]  # ours already: taken again, unchanged
    assert rl.remove(str(tmp_path), names, "a") == (True, holder("a"))
    assert not list(tmp_path.glob("*.json"))
    assert rl.remove(str(tmp_path), names, "a") == (False, None)


def test_a_release_of_several_leaves_another_runs_lock(tmp_path):
    rl.acquire(str(tmp_path), ["strata-ops"], holder("a"))
    rl.acquire(str(tmp_path), ["workload-x"], holder("b"))
    assert rl.remove(str(tmp_path), ["strata-ops", "workload-x"], "a") == (True, holder("a"))
    assert [p.name for p in tmp_path.glob("*.json")] == ["workload-x.json"]


def test_check_mode_writes_nothing_not_even_the_directory(tmp_path):
    locks = tmp_path / "locks"
    assert rl.acquire(str(locks), ["strata-ops"], holder("a"), check_mode=True) == (True, holder("a"), None)
    assert not locks.exists()
    rl.acquire(str(locks), ["strata-ops"], holder("a"))
    assert rl.remove(str(locks), ["strata-ops"], "a", check_mode=True)[0]
    assert (locks / "strata-ops.json").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [("{", "cannot be read"), ("[]", "names no holder"), ('{"token": ""}', "names no holder")],
)
def test_a_lock_file_that_is_not_a_holder_is_named_never_taken_over(tmp_path, content, says):
    (tmp_path / "strata-ops.json").write_text(content)
    with pytest.raises(rl.RunLockError, match=says):
        rl.acquire(str(tmp_path), ["strata-ops"], holder("a"))
    assert (tmp_path / "strata-ops.json").read_text() == content


@pytest.mark.parametrize(
    ("name", "lock_dir"), [("../etc/x", "/run"), ("a b", "/run"), ("", "/run"), ("ok", "run")]
)
def test_bad_names_and_relative_dirs_are_refused(name, lock_dir):
    with pytest.raises(InvalidArgument):
        rl.lock_path(lock_dir, name)


def test_a_holder_whose_process_is_gone_or_replaced_is_stale_only_on_its_own_controller():
    child = subprocess.Popen(["sleep", "30"])
    try:
        alive = build_lock.owner_record(pid=child.pid, command="ansible-playbook")
        assert not action.is_stale(alive)
        assert action.is_stale(dict(alive, start_time=alive["start_time"] + 1))  # the pid was reused
        assert action.is_stale(dict(alive, boot_id="before-the-reboot"))
        assert not action.is_stale(
            dict(alive, host="other-controller", start_time=1)
        )  # never judged from afar
    finally:
        child.kill()
        child.wait()
    assert action.is_stale(alive)
    assert not action.is_stale({"token": "x", "host": "ctl"})  # not a record we can judge: wait, never break


def test_this_run_is_the_ansible_playbook_process_the_worker_belongs_to():
    run = action.this_run("Layer 4")
    assert run["pid"] == os.getppid() and run["start_time"] == build_lock.process_start(os.getppid())[0]
    assert run["token"] == f"{run['host']}/{run['boot_id']}/{run['pid']}/{run['start_time']}"
    assert "Layer 4" in rl.describe(run) and run["host"] in rl.describe(run)


def test_the_default_directory_is_roots_or_the_users_own(tmp_path):
    assert rl.default_lock_dir(uid=0) == "/run/strata-ops/locks"
    (tmp_path / "user" / "1000").mkdir(parents=True)
    runtime = rl.default_lock_dir(uid=1000, runtime_root=str(tmp_path / "user"), temp_root="/tmp")
    assert runtime == str(tmp_path / "user" / "1000" / "strata-ops" / "locks")
    assert rl.default_lock_dir(uid=1001, runtime_root=str(tmp_path / "user"), temp_root="/tmp") == (
        "/tmp/strata-ops-1001/locks"
    )


def test_a_lock_directory_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "locks").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(rl.RunLockError, match="is not a directory of this user"):
        rl.acquire(str(tmp_path / "locks"), ["strata-ops"], holder("a"))
    assert os.listdir(tmp_path / "elsewhere") == []
