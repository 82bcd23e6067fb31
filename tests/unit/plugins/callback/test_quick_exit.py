"""The strata.ops.quick_exit callback: enabled by the repository's ansible.cfg, it freezes the run's
objects at the recap and changes nothing else of a run."""

import gc
import os
import subprocess
import sys

from ansible_collections.strata.ops.plugins.callback.quick_exit import CallbackModule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: One task
      ansible.builtin.debug:
        msg: quick exit
"""


def test_the_recap_freezes_the_objects_of_the_run():
    gc.unfreeze()
    try:
        CallbackModule().v2_playbook_on_stats(stats=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_repository_config_loads_it_and_the_run_ends_as_before(tmp_path):
    """ansible.cfg enables it by its FQCN: a run loads it (no 'unable to load' warning), prints the
    same recap and exits 0; in a failed run the exit status stays 2."""
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    failing = tmp_path / "failing.yml"
    failing.write_text(
        PLAY.replace("ansible.builtin.debug:\n        msg: quick exit", "ansible.builtin.fail:")
    )
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    argv = [playbook, "-i", "localhost,", "-c", "local"]
    ran = subprocess.run([*argv, str(play)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "quick_exit" not in ran.stdout + ran.stderr  # no warning names it
    assert "ok=1" in ran.stdout
    dump = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-config"), "dump", "--only-changed"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "strata.ops.quick_exit" in dump.stdout
    failed = subprocess.run(
        [*argv, str(failing)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert failed.returncode == 2 and "failed=1" in failed.stdout, failed.stdout
