# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The end of a module process once its result is written.

Then the interpreter only tears itself down - every module and object it made, 6-20 ms of pure
CPU on a small host (docs/performance.md, shutdown) - and whoever waits for the module waits for
that too: ansible-playbook's worker, an operator's stop that returns when the last pod is gone.
``end_after_exit_handlers`` registers one more exit handler which does what the handlers
registered before it would do and ends the process with the module's exit status, as soon as the
handlers registered after it have run (atexit runs them last-in first-out).

It does so only where it knows every handler registered before it: logging's shutdown, the
removal of AnsibleModule's temporary directory, weakref.finalize's exit run, and this
collection's own cleanups (``at_exit``). Any other handler (coverage under ansible-test, a
library's own) and the interpreter ends as it always does. AnsiballZ has removed its payload
directory before any exit handler runs (its ``finally``).
"""

import atexit
import os
import shutil
import sys
import traceback
import weakref

_CLEANUPS = []


def at_exit(cleanup):
    """Run ``cleanup()`` when the process ends, whichever way it ends (atexit, or ``end_now``)."""
    _CLEANUPS.append(cleanup)
    atexit.register(cleanup)


def known_exit_handlers(module):
    """The exit handlers registered so far that ``end_now`` does itself: (how many, AnsibleModule's
    temporary directory or None).

    logging registers its shutdown when imported; AnsibleModule the removal of its temporary
    directory when ``module.tmpdir`` is first read (unless it keeps remote files); weakref.finalize
    its exit run with its first finalizer that runs at exit (urllib3's pools make one)."""
    handlers = len(_CLEANUPS) + ("logging" in sys.modules)
    handlers += bool(getattr(weakref.finalize, "_registered_with_atexit", False))
    tmpdir = getattr(module, "_tmpdir", None)
    if tmpdir and not getattr(module, "_keep_remote_files", False):
        return handlers + 1, tmpdir
    return handlers, None


def end_after_exit_handlers(module, code):
    """Register ``end_now`` for this module process whose exit status is ``code`` (its
    SystemExit's), where every exit handler registered so far is known."""
    registered = getattr(atexit, "_ncallbacks", None)
    handlers, tmpdir = known_exit_handlers(module)
    if isinstance(code, int) and registered is not None and registered() == handlers:
        atexit.register(end_now, code, tmpdir)


def end_now(code, module_tmpdir):
    """The known handlers in atexit's order (the last registered first), the standard streams
    flushed, then the process's end with ``code``. A handler's failure is printed as atexit
    prints it, and the others still run."""
    steps = [*reversed(_CLEANUPS)]
    if getattr(weakref.finalize, "_registered_with_atexit", False):
        steps.append(weakref.finalize._exitfunc)  # the handler weakref registered
    if module_tmpdir:
        steps.append(lambda: shutil.rmtree(module_tmpdir))
    if "logging" in sys.modules:
        steps.append(sys.modules["logging"].shutdown)
    for step in steps:
        try:
            step()
        except Exception:  # as atexit does: print it, go on with the others
            sys.stderr.write("Exception ignored in atexit callback:\n" + traceback.format_exc())
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
