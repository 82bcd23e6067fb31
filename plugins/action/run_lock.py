# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of strata.ops.run_lock: this run's identity, the wait, and stale holders.

The lock file is on the host (the module); who this run is can only be known here: the
ansible-playbook process is this worker's parent. A holder from this controller whose process is
gone (or whose pid now belongs to another process: the start time differs) is stale.
"""

import getpass
import os
import socket
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.strata.ops.plugins.module_utils import build_lock
from ansible_collections.strata.ops.plugins.module_utils.run_lock import describe
from ansible_collections.strata.ops.plugins.modules.run_lock import ARGUMENT_SPEC


def this_run(play):
    """This ansible-playbook process (this worker's parent) as a holder: build_lock's owner record
    (host, boot id, pid and its start time, so a reused pid is never taken for the old run) with
    the play and the user."""
    pid = os.getppid()
    record = build_lock.owner_record(pid=pid, command="ansible-playbook")
    record.update(
        token=f"{record['host']}/{record['boot_id']}/{pid}/{record['start_time']}",
        play=play,
        user=getpass.getuser(),
    )
    return record


def is_stale(holder):
    """A holder of this controller whose ansible-playbook process is gone (build_lock's rules: pid
    gone, a zombie, reused, or taken before the last reboot). Another controller's is never stale."""
    here = {"host": socket.gethostname(), "boot_id": build_lock.boot_id()}
    record = build_lock.checked_record(holder)
    return record is not None and build_lock.owner_state(record, here)[0] == build_lock.DEAD


def busy_message(answer, host, timeout):
    return (
        f"another strata.ops run holds {answer['lock_file']} on {host}: {describe(answer['holder'])}; "
        f"waited {timeout} s. Let it finish and run again (or raise timeout). Only if that run is gone "
        "for good (its controller crashed, its AWX job was cancelled) run again with force=true "
        "(playbooks: -e strata_run_lock_force=true). This run changed nothing"
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(k for k in ARGUMENT_SPEC if k not in ("holder", "break_token"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validated = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validated.error_messages:
            return dict(result, failed=True, msg="; ".join(validated.error_messages))
        params = validated.validated_parameters
        if params["timeout"] < 0 or params["poll"] < 1:
            return dict(
                result,
                failed=True,
                msg=f"timeout={params['timeout']} poll={params['poll']}: timeout must be 0 or more and "
                "poll 1 or more (seconds); nothing was taken",
            )
        args = {k: params[k] for k in ("name", "state", "lock_dir")}
        args["holder"] = this_run(self._task.get_play().get_name())
        started = time.monotonic()
        warnings, took_over = [], None
        while True:
            answer = self._execute_module("strata.ops.run_lock", module_args=args, task_vars=task_vars)
            answer.pop("invocation", None)
            answer.update(waited_s=round(time.monotonic() - started, 1), state=params["state"])
            if took_over:
                answer["took_over"] = took_over
            if answer.get("failed") or params["state"] == "absent" or answer.get("taken"):
                return dict(result, **answer, warnings=warnings + answer.get("warnings", []))
            other = answer["holder"]
            stale = is_stale(other)
            if (stale or params["force"]) and args.get("break_token") != other["token"]:
                check = self._play_context.check_mode
                took_over = (
                    f"run lock {answer['lock_file']}: {'would remove' if check else 'removed'} the lock of "
                    f"{describe(other)} ({'its ansible-playbook process is gone' if stale else 'force=true'})"
                )
                # A stale lock is what every failed run leaves (post_tasks do not run): said in the
                # result. Breaking a live or unknown run's lock is the operator's call: a warning.
                if not stale:
                    warnings.append(took_over)
                if check:
                    answer.update(taken=True, holder=args["holder"], took_over=took_over)
                    return dict(result, **answer, warnings=warnings)
                args["break_token"] = other["token"]
                continue
            if time.monotonic() - started >= params["timeout"]:
                host = task_vars.get("inventory_hostname")
                return dict(result, **answer, failed=True, msg=busy_message(answer, host, params["timeout"]))
            time.sleep(params["poll"])
