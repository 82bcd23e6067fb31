# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback strata.ops.quick_exit: ansible-playbook ends once its recap is out."""

DOCUMENTATION = r"""
name: quick_exit
type: aggregate
short_description: Ends ansible-playbook as soon as its recap is printed
version_added: "0.2.0"
description:
  - Once the play recap is out, ansible-playbook only exits, yet CPython's final garbage collection of
    every object of the run takes 0.15 s to 0.45 s of pure CPU on a small host, more with a large
    inventory; the job that waits for the playbook (a shell loop, AWX, a CI step) waits for it too.
  - This callback freezes the run's objects out of that collection (Python's C(gc.freeze)) when the
    recap comes. Nothing else changes - atexit handlers, temporary file removal and the exit status
    are those of a run without it - and it prints nothing.
  - Enable it with C(callbacks_enabled = strata.ops.quick_exit) in C(ansible.cfg) (the collection's own
    C(ansible.cfg) does) or C(ANSIBLE_CALLBACKS_ENABLED=strata.ops.quick_exit).
requirements:
  - Python 3.7 or later (C(gc.freeze)).
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callbacks_enabled = strata.ops.quick_exit
"""

import gc

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Freezes the run's objects out of CPython's final collection once the recap is printed."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "strata.ops.quick_exit"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        # The last event of a run: what remains is the interpreter's exit, whose final collection
        # would visit every object the run made (measured in docs/performance.md, shutdown).
        gc.freeze()
