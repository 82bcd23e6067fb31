# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of strata.ops.data_transfer: the module's progress in the task output while it runs.

A module's output reaches the controller only when it ends, and a copy can take hours. The module
runs as usual (in a thread here); meanwhile its progress file is read on the source host every
``progress_every`` seconds and one line is displayed: what ``ansible-playbook`` prints and what an
AWX job's output shows as it happens.
"""

import hashlib
import json
import shlex
import threading

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.strata.ops.plugins.module_utils.tree_copy.job import ARGUMENT_SPEC

display = Display()
# How often a progress line is shown (seconds); not a module option, so it is not sent to the host.
PROGRESS_EVERY_VAR = "data_transfer_progress_every"


def _size(value):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value} B"
        value /= 1024.0
    return str(value)


def progress_line(host, progress):
    """One line from a progress file: done, total, rate, ETA and the streams by state."""
    total, done = progress.get("bytes_total") or 0, progress.get("bytes_done") or 0
    states = {}
    for stream in progress.get("streams", []):
        states[stream["state"]] = states.get(stream["state"], 0) + 1
    eta = progress.get("eta_s")
    eta_text = f"{eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}" if isinstance(eta, int) else "-"
    percent = f"{100.0 * done / total:.1f}%" if total else "-"
    rate = _size(progress.get("rate_bytes_s") or 0)
    by_state = ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "-"
    sizes = f"{_size(done)} of {_size(total)}, {rate}/s"
    return f"[{host}] data_transfer {percent}: {sizes}, ETA {eta_text}; streams {by_state}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        if self._task.check_mode or self._task.async_val:
            result.update(self._execute_module(module_args=args, task_vars=task_vars))
            return result
        state_dir = args.get("state_dir") or ARGUMENT_SPEC["state_dir"]["default"]
        # One progress file per copy (source, destination), rewritten by each run of it.
        copy_key = hashlib.sha1(
            "\0".join(str(args.get(k)) for k in ("src_path", "dest_host", "dest_path")).encode()
        ).hexdigest()[:16]
        args.setdefault("progress_file", f"{state_dir}/progress-{copy_key}.json")
        every = float(task_vars.get(PROGRESS_EVERY_VAR, 10))
        host = task_vars.get("inventory_hostname", "?")

        outcome = {}
        worker = threading.Thread(
            target=lambda: outcome.update(self._execute_module(module_args=args, task_vars=task_vars)),
            daemon=True,
        )
        worker.start()
        shown = None
        while worker.is_alive():
            worker.join(every)
            if not worker.is_alive():
                break
            line = self._read_progress(host, args["progress_file"])
            if line and line != shown:
                display.display(line)
                shown = line
        result.update(outcome)
        return result

    def _read_progress(self, host, path):
        reading = self._low_level_execute_command(f"cat {shlex.quote(path)}", sudoable=True)
        if reading.get("rc") != 0:
            return None
        try:
            return progress_line(host, json.loads(reading.get("stdout") or ""))
        except (ValueError, TypeError, KeyError):
            return None
