# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the collection and the one way a module ends.

Every helper in module_utils raises a ``StrataError`` (or a subclass): ``msg`` tells the operator
what is wrong and how to fix it, ``error_kind`` names the failure for callers (the result's
``error``: a short word such as ``unreachable``, or the class name), and ``details`` become keys of the
failure result (what was found, what was done before the failure). Warnings travel the same way:
a result's or an error's ``warnings`` list is handed to ``module.warn``, never returned as a key.

A module's ``main()`` builds its AnsibleModule and hands the work to ``run_module``:

    def main():
        module = AnsibleModule(argument_spec=..., supports_check_mode=True)
        run_module(module, lambda: Worker(module.params, module.check_mode, module.run_command).run())
"""

import datetime
import gc
import inspect
import time

from ansible_collections.strata.ops.plugins.module_utils.process_end import end_after_exit_handlers


def utc_iso(wall=None):
    """A wall-clock time (time.time(), default now) as RFC 3339 UTC with milliseconds:
    2025-01-01T00:00:00.000Z, what results, state files and manifests carry."""
    stamp = datetime.datetime.fromtimestamp(time.time() if wall is None else wall, tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class StrataError(Exception):
    """What went wrong (``msg``), its ``error_kind`` and the ``details`` that go into the result.

    Details may hold any key a result may (``kind`` of an object among them), hence the long name."""

    error_kind = None  # subclasses set a short word; otherwise the class name is the kind

    def __init__(self, msg, error_kind=None, **details):
        super().__init__(msg)
        self.msg = msg
        self.error_kind = error_kind or self.error_kind or type(self).__name__
        self.details = details

    def __str__(self):
        return self.msg


class InvalidArgument(StrataError):
    """Options that cannot work: a value out of range, or a combination that names nothing to do.
    Raised before anything is changed."""


def warn_all(module, warnings):
    for text in warnings or ():
        module.warn(text)


def fail(module, exc, **result):
    """fail_json from a StrataError: msg, error=<kind>, its details (its warnings warned)."""
    details = dict(result, **exc.details)
    warn_all(module, details.pop("warnings", None))
    module.fail_json(msg=exc.msg, error=exc.error_kind, **details)


def load_result_encoder():
    """Import what exit_json encodes the result with, now. ansible-core 2.19+ imports it in
    exit_json (its module-to-controller serialization profile): 1-2 ms between the event a wait
    ends on and the module's return (safe_shutdown, docs/performance.md). Earlier releases
    import their encoder with AnsibleModule: nothing to do there."""
    try:
        from ansible.module_utils import basic  # noqa: PLC0415 - the running ansible-core's
        from ansible.module_utils.common.json import Direction, get_module_encoder  # noqa: PLC0415
    except ImportError:
        return
    profile = getattr(basic, "_ANSIBLE_PROFILE", None)
    if profile:
        get_module_encoder(profile, Direction.MODULE_TO_CONTROLLER)


def run_module(module, work):
    """Run ``work()`` (returns the result dict) and end the module: exit_json, or fail_json for a
    StrataError. Anything else is a bug and is left to ansible-core's own crash report.

    The result's JSON encoder is loaded before ``work()``: a module that waits for an event
    returns that much sooner after it.

    In a module process (the caller runs as ``__main__``: under Ansible's AnsiballZ and as
    ``python plugins/modules/NAME.py``) the process ends once its exit handlers have run
    (process_end.py); imported (unit tests) it only raises SystemExit."""
    load_result_encoder()
    try:
        result = work()
    except StrataError as exc:
        result = exc
    # The process ends now: its objects need no collection at exit. CPython's final collection of
    # them took 6-35 ms after the result was written, more than the waits it ends (docs/performance.md).
    gc.freeze()
    in_module_process = inspect.currentframe().f_back.f_globals.get("__name__") == "__main__"
    try:
        if isinstance(result, StrataError):
            fail(module, result)
        warn_all(module, result.pop("warnings", None))
        module.exit_json(**result)
    except SystemExit as ending:
        if in_module_process:
            end_after_exit_handlers(module, ending.code)
        raise
