# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The workload's graceful exit command: run with a timer, SIGTERM then SIGKILL; for agave, the
wait flag its version needs."""

import os
import re
import threading
import time

from ansible_collections.strata.ops.plugins.module_utils.common import utc_iso


def run_exit_command(run_command, argv, timeout, clock=time.monotonic, wall=time.time):
    """Run the graceful exit command (no shell) with a deadline. ``run_command`` is
    AnsibleModule.run_command (or anything with its signature and before_communicate_callback).
    At the deadline the process gets SIGTERM, then SIGKILL 5 s later. Returns a result dict;
    ``ok`` is True only for rc 0 within the deadline."""
    timers = []
    state = {"timed_out": False}

    def arm(proc):
        def kill():
            if proc.poll() is None:
                proc.kill()

        def expire():
            if proc.poll() is None:
                state["timed_out"] = True
                proc.terminate()
                second = threading.Timer(5, kill)
                second.daemon = True
                timers.append(second)
                second.start()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    start, started_at = clock(), wall()
    error = None
    try:
        rc, out, err = run_command(list(argv), before_communicate_callback=arm, handle_exceptions=False)
    except OSError as exc:
        rc, out, err, error = None, "", "", f"{argv[0]}: {exc.strerror or exc}"
    finally:
        for timer in timers:
            timer.cancel()
    result = {
        "argv": list(argv),
        "rc": rc,
        "stdout": out,
        "stderr": err,
        "timed_out": state["timed_out"],
        "elapsed": round(clock() - start, 3),
        "started_at": utc_iso(started_at),
        "finished_at": utc_iso(wall()),
    }
    result["ok"] = rc == 0 and not state["timed_out"] and error is None
    if error:
        result["error"] = error
    elif state["timed_out"]:
        result["error"] = f"did not finish within exit_timeout ({timeout} s) and was killed"
    elif rc != 0:
        tail = (err or out or "").strip()[-500:]
        detail = ": " + tail if tail else ""
        result["error"] = f"exited with rc {rc}{detail}"
    return result


# agave-validator's exit subcommand (anza-xyz/agave validator/src/commands/exit): before 3.0 it
# returns right after the exit request unless given --wait-for-exit; 3.0 made waiting for the
# process the default (--no-wait-for-exit opts out) and deprecated --wait-for-exit; 4.0 removed it.
AGAVE_CLIS = ("agave-validator", "solana-validator")

AGAVE_WAITS_BY_DEFAULT = (3, 0)

AGAVE_WAIT_FLAG = "--wait-for-exit"

AGAVE_WAIT_CHOICES = (AGAVE_WAIT_FLAG, "--no-wait-for-exit", "--monitor", "-m")

AGAVE_VERSION = re.compile(r"\b(?:agave|solana)-validator\s+v?(\d+)\.(\d+)\.(\d+)")


def is_agave_exit(argv):
    """Whether argv is agave-validator's (or solana-validator's) exit subcommand."""
    return bool(argv) and os.path.basename(argv[0]) in AGAVE_CLIS and "exit" in argv[1:]


def agave_exit_plan(argv, version_text):
    """{argv, agave_version, wait[, warning]}: ``argv`` as it must run so that it returns only
    once the validator process has exited, for the version ``<cli> --version`` printed
    (``version_text``; None when argv is not an agave exit). ``wait`` says which way ran."""
    argv = list(argv)
    if version_text is None:
        return {"argv": argv, "agave_version": None, "wait": "as given (not an agave-validator exit)"}
    match = AGAVE_VERSION.search(version_text)
    if not match:
        printed = version_text.strip()[:200] or "no output"
        return {
            "argv": argv,
            "agave_version": None,
            "wait": f"run as given: the agave version is unknown ({argv[0]} --version: {printed})",
            "warning": True,
        }
    version = tuple(int(x) for x in match.groups())
    text = ".".join(match.groups())
    given = [a for a in argv if a in AGAVE_WAIT_CHOICES]
    if version >= AGAVE_WAITS_BY_DEFAULT:
        wait = f"agave {text} waits for the validator process to exit by default"
        if AGAVE_WAIT_FLAG in argv:
            argv = [a for a in argv if a != AGAVE_WAIT_FLAG]
            wait += "; --wait-for-exit left out (deprecated in 3.0, refused by 4.x)"
        elif given:
            wait = f"agave {text}: as given ({' '.join(given)})"
        return {"argv": argv, "agave_version": text, "wait": wait}
    if given:
        return {
            "argv": argv,
            "agave_version": text,
            "wait": f"agave {text}: as given ({' '.join(given)})",
        }
    return {
        "argv": [*argv, AGAVE_WAIT_FLAG],
        "agave_version": text,
        "wait": f"agave {text} before 3.0: --wait-for-exit added, without it exit returns before the "
        "validator process has exited",
    }
