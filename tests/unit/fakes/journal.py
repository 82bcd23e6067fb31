"""One ordered log of every call the fakes answer (Kubernetes, GitLab, files), so a test can
assert the order of changes across systems, and inject a crash at any call.

Every fake call goes through ``Journal.call(system, op, target, detail, changes=..., apply=...)``:
``apply`` does the call's work on the fake's data (and may raise the fake system's own errors);
the entry is logged once it ran, with ``error`` set when it raised. An entry that changed
something (``changes=True``, and the call succeeded) carries ``world``: what every registered
snapshotter (``journal.snapshotters[name] = callable``) saw right after the change, so a test can
ask what the state file held, or whether the workloads were Ready, at the moment of a change.

``crash_at(...)`` makes a matching call raise: ``when="before"`` fails it before it reaches the
system (nothing done), ``when="after"`` lets it do its work and then raises, as a run killed
right after the request was answered. The default exception is ``Crash``, which nothing in a
worker catches (a ``kill -9`` between two calls); any exception instance may be given instead.
"""

import copy
import json
import os

from ansible_collections.strata.ops.plugins.module_utils import state as st

# the systems a worker changes (the entries a "first change" is looked for in)
SYSTEMS = ("gitlab", "kube", "file")


class Crash(Exception):
    """A run killed at an injected point: nothing in the code under test catches this."""


class Entry:
    """One call: ``seq`` (its position in the log, in the order the calls returned or failed),
    ``call`` (in the order they were made: a call made while another one runs, such as a
    controller's progress during a watch, is logged before the call it ran in), ``system``,
    ``op``, ``target``, ``detail`` (the call's argument that matters: a patch, a flag, the bytes
    written), ``changes`` (a successful call that changed the system), ``error`` (the class name
    of what it raised) and ``world``."""

    def __init__(self, call, system, op, target, *, detail=None, changes=False):
        self.seq = None
        self.call = call
        self.system = system
        self.op = op
        self.target = target
        self.detail = detail
        self.changes = changes
        self.error = None
        self.world = None

    def __repr__(self):
        error = f" !{self.error}" if self.error else ""
        mark = " *" if self.changes else ""
        return f"<{self.seq} {self.system} {self.op} {self.target}{mark}{error}>"

    def key(self):
        return (self.system, self.op, self.target)


class Journal:
    def __init__(self):
        self.entries = []
        self.snapshotters = {}
        self.faults = []
        self._calls = 0

    # --- recording ------------------------------------------------------------------------
    def call(self, system, op, target, detail=None, *, changes=False, apply=None):
        entry = Entry(self._calls, system, op, target, detail=copy.deepcopy(detail), changes=changes)
        self._calls += 1
        fault = self._fault(entry, "before")
        if fault is not None:
            entry.changes = False
            entry.error = type(fault).__name__ + " (injected before)"
            self._append(entry)
            raise fault
        try:
            result = apply() if apply is not None else None
        except Exception as exc:
            entry.changes = False
            entry.error = type(exc).__name__
            self._append(entry)
            raise
        if entry.changes:
            entry.world = self.world()
        self._append(entry)
        fault = self._fault(entry, "after")
        if fault is not None:
            raise fault
        return result

    def _append(self, entry):
        entry.seq = len(self.entries)
        self.entries.append(entry)

    def world(self):
        """What each snapshotter sees now (deep copies)."""
        return {name: copy.deepcopy(snap()) for name, snap in sorted(self.snapshotters.items())}

    # --- faults ---------------------------------------------------------------------------
    def crash_at(self, system=None, op=None, target=None, *, where=None, when="after", nth=1, exc=None):
        """Raise ``exc`` (default Crash) at the ``nth`` call matching system/op/target (None:
        any) and ``where(entry)``: before it reaches the system, or after it did its work."""
        if when not in ("before", "after"):
            raise ValueError(when)
        self.faults.append(
            {
                "match": (system, op, target, where),
                "when": when,
                "left": nth,
                "exc": exc,
            }
        )

    def crash_at_call(self, number, when="before", exc=None):
        """Raise at the call made ``number``-th (0 is the first call made)."""
        self.crash_at(where=lambda e: e.call == number, when=when, exc=exc)

    def _fault(self, entry, when):
        for fault in self.faults:
            system, op, target, where = fault["match"]
            if fault["when"] != when or fault["left"] <= 0:
                continue
            if system is not None and entry.system != system:
                continue
            if op is not None and entry.op != op:
                continue
            if target is not None and entry.target != target:
                continue
            if where is not None and not where(entry):
                continue
            fault["left"] -= 1
            if fault["left"] == 0:
                return fault["exc"] or Crash(f"crash injected {when} {entry!r}")
        return None

    # --- queries --------------------------------------------------------------------------
    def mark(self):
        """The position of the next entry (for ``since`` and the ``start`` of queries)."""
        return len(self.entries)

    def calls(self):
        """How many calls were made."""
        return self._calls

    def by_call(self, number):
        return next(e for e in self.entries if e.call == number)

    def since(self, mark):
        return self.entries[mark:]

    def changes(self, systems=SYSTEMS, start=0):
        return [e for e in self.entries[start:] if e.changes and e.system in systems]

    def find(self, system=None, op=None, target=None, where=None, start=0):
        """Every entry matching (None: any)."""
        return [
            e
            for e in self.entries[start:]
            if (system is None or e.system == system)
            and (op is None or e.op == op)
            and (target is None or e.target == target)
            and (where is None or where(e))
        ]

    def first(self, *args, **kwargs):
        found = self.find(*args, **kwargs)
        assert found, f"no entry matches {args} {kwargs}; journal: {self.entries}"
        return found[0]

    def last(self, *args, **kwargs):
        found = self.find(*args, **kwargs)
        assert found, f"no entry matches {args} {kwargs}; journal: {self.entries}"
        return found[-1]


def read_json(path):
    """The JSON held at ``path`` (None when there is no file)."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def read_bytes(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        return handle.read()


def record_file_writes(journal, patcher):
    """Log the file writes of module_utils/state.py in ``journal``: ``atomic_write_bytes`` (the
    runner config) as system "file", ``StateFile.write`` / ``remove`` as system "state".
    ``patcher`` is pytest's monkeypatch (or anything with its ``setattr``)."""
    write_bytes = st.atomic_write_bytes
    state_write = st.StateFile.write
    state_remove = st.StateFile.remove

    def atomic_write_bytes(path, data, mode=None):
        return journal.call(
            "file",
            "write",
            os.path.abspath(path),
            bytes(data),
            changes=True,
            apply=lambda: write_bytes(path, data, mode=mode),
        )

    def write(self, data):
        return journal.call(
            "state", "write", self.path, data, changes=True, apply=lambda: state_write(self, data)
        )

    def remove(self):
        return journal.call("state", "remove", self.path, changes=True, apply=lambda: state_remove(self))

    patcher.setattr(st, "atomic_write_bytes", atomic_write_bytes)
    patcher.setattr(st.StateFile, "write", write)
    patcher.setattr(st.StateFile, "remove", remove)
