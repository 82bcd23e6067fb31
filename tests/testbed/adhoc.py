"""A strata.ops module run as an operator runs one ad hoc: ``ansible localhost -c local -m strata.ops.NAME``.

From the checkout's root with its ansible.cfg, so strata.ops resolves through its collections path.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The callback task_result reads the task's result dict from.
JSON_CALLBACK = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}


def run(name, args, *options, env=None):
    """``ansible localhost -c local -m strata.ops.<name> -a <json> [options]``: the finished process.
    env: variables set on top of this process's environment."""
    environment = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), **(env or {}))
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    argv = [ansible, "localhost", "-c", "local", "-m", "strata.ops." + name, "-a", json.dumps(args), *options]
    return subprocess.run(argv, cwd=REPO, env=environment, capture_output=True, text=True, check=False)


def task_result(name, args, *options, env=None):
    """(the task's result dict - what a playbook would register - or None when Ansible printed
    none; Ansible's stdout and stderr), through the json callback."""
    proc = run(name, args, *options, env={**JSON_CALLBACK, **(env or {})})
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        result = None
    return result, proc.stdout + proc.stderr
