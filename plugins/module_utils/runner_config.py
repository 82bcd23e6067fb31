# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Edits and checks of gitlab-runner's config.toml with tomlkit (comments and order kept).

What the Kubernetes executor reads (https://docs.gitlab.com/runner/executors/kubernetes/):

* ``[runners.kubernetes.node_selector]`` — a map, ``"label" = "value"``.
* ``[runners.kubernetes.node_tolerations]`` — a MAP: ``"key=value" = "Effect"`` (``"key" =
  "Effect"`` for a key-only toleration, operator Exists). The array-of-tables form
  ``[[runners.kubernetes.node_tolerations]]`` is not what the runner reads: job pods get no
  toleration and stay Pending on a tainted node. It is rejected with that explanation.
* ``cpu_request`` / ``memory_request`` (and ``*_limit``) keys in ``[runners.kubernetes]``. A
  ``[runners.kubernetes.resources.requests]`` block is ignored by the executor: rejected, with
  the keys to use instead.
* top-level ``concurrent``.

``restore`` is not an edit: the recorded bytes are written back as they were.

Helpers raise ``RunnerConfigError``; a module's ``main()`` catches it once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

try:
    import tomlkit
    from tomlkit.exceptions import ParseError as _TomlParseError
    from tomlkit.items import AoT as _AoT
    from tomlkit.items import Table as _Table

    HAS_TOMLKIT = True
    TOMLKIT_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the host
    tomlkit = _TomlParseError = _AoT = _Table = None
    HAS_TOMLKIT = False
    TOMLKIT_IMPORT_ERROR = traceback.format_exc()

TOMLKIT_MISSING = (
    "the Python package tomlkit is required to edit gitlab-runner's config.toml with its comments "
    "kept; install it for the Python that runs the module (Debian: apt-get install python3-tomlkit; "
    "the controller's venv: pip install tomlkit)"
)

RESOURCE_KEYS = {
    ("requests", "cpu"): "cpu_request",
    ("requests", "memory"): "memory_request",
    ("requests", "ephemeral-storage"): "ephemeral_storage_request",
    ("limits", "cpu"): "cpu_limit",
    ("limits", "memory"): "memory_limit",
    ("limits", "ephemeral-storage"): "ephemeral_storage_limit",
}


class RunnerConfigError(Exception):
    """config.toml does not parse, holds a form the runner ignores, or cannot be edited."""


def require_tomlkit():
    if not HAS_TOMLKIT:
        raise RunnerConfigError(TOMLKIT_MISSING)


def toleration_key(key, value=None):
    """The map key of one toleration: ``key=value``, or ``key`` alone (operator Exists)."""
    return "%s=%s" % (key, value) if value not in (None, "") else key


def parse(text, source="config.toml"):
    """The tomlkit document of ``text`` (str or bytes), checked with ``validate``."""
    require_tomlkit()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunnerConfigError("%s is not UTF-8 text: %s" % (source, exc)) from None
    try:
        doc = tomlkit.parse(text)
    except _TomlParseError as exc:
        raise RunnerConfigError(
            "%s does not parse as TOML (line %s, column %s): %s" % (source, exc.line, exc.col, exc)
        ) from None
    validate(doc, source)
    return doc


def _runners(doc, source):
    runners = doc.get("runners")
    if runners is None:
        return []
    if isinstance(runners, _AoT) or (isinstance(runners, list) and all(isinstance(r, dict) for r in runners)):
        return list(runners)
    raise RunnerConfigError(
        "%s: 'runners' must be an array of tables ([[runners]], one per runner), found a %s"
        % (source, "plain table [runners]" if isinstance(runners, dict) else type(runners).__name__)
    )


def validate(doc, source="config.toml"):
    """Raise RunnerConfigError for the forms the Kubernetes executor ignores."""
    problems = []
    for index, runner in enumerate(_runners(doc, source)):
        label = "[[runners]] #%d (name %r)" % (index + 1, runner.get("name"))
        kube = runner.get("kubernetes")
        if kube is None:
            continue
        if not isinstance(kube, dict):
            problems.append("%s: runners.kubernetes must be a table" % label)
            continue
        tolerations = kube.get("node_tolerations")
        if tolerations is not None and not isinstance(tolerations, dict):
            problems.append(
                "%s: [[runners.kubernetes.node_tolerations]] (an array of tables) is not read by "
                "gitlab-runner's Kubernetes executor: job pods get no toleration and stay Pending on a "
                "tainted node. Use the map form: [runners.kubernetes.node_tolerations] with one line "
                'per toleration, "key=value" = "Effect" (for example "experiment=dedicated" = '
                '"NoSchedule")' % label
            )
        selector = kube.get("node_selector")
        if selector is not None and not isinstance(selector, dict):
            problems.append(
                '%s: runners.kubernetes.node_selector must be a table of "label" = "value"' % label
            )
        resources = kube.get("resources")
        if resources is not None:
            hints = []
            if isinstance(resources, dict):
                for section, keys in resources.items():
                    if isinstance(keys, dict):
                        for name in keys:
                            new = RESOURCE_KEYS.get((section, name))
                            if new:
                                hints.append("resources.%s.%s -> %s" % (section, name, new))
            problems.append(
                "%s: [runners.kubernetes.resources.requests] (and .limits) is ignored by the Kubernetes "
                "executor, so the job pods would run without those requests. Use the executor's keys in "
                "[runners.kubernetes] instead: cpu_request, memory_request, cpu_limit, memory_limit%s"
                % (label, (" (" + ", ".join(hints) + ")") if hints else "")
            )
    if problems:
        raise RunnerConfigError("%s: %s" % (source, "; ".join(problems)))


def _child_indent(container):
    """Indent (as tomlkit adds it on top of the container's own) for a new plain key, taken
    from the container's existing keys so that an edited file keeps its look."""
    own = getattr(getattr(container, "trivia", None), "indent", "") or ""
    body = getattr(getattr(container, "value", None), "body", [])
    for key, item in body:
        if key is not None and not isinstance(item, (_Table, _AoT)):
            indent = item.trivia.indent
            return indent[len(own) :] if indent.startswith(own) else indent
    return "  " if own else ""


def _new_item(container, value):
    item = tomlkit.item(value)
    item.trivia.indent = _child_indent(container)
    return item


def _set_map(container, name, values):
    """Merge ``values`` into the sub-table ``name`` of ``container`` (created when missing);
    returns True when something changed."""
    table = container.get(name)
    if table is None:
        table = tomlkit.table()
        table.trivia.indent = _child_indent(container)
        for key, value in values.items():
            item = tomlkit.item(value)
            item.trivia.indent = "  " if table.trivia.indent or container.trivia.indent else ""
            table.append(key, item)
        table.add(tomlkit.nl())
        container.append(name, table)
        return True
    changed = False
    for key, value in values.items():
        if table.get(key) != value:
            if key in table:
                table[key] = value
            else:
                table.append(key, _new_item(table, value))
            changed = True
    return changed


def _set_key(container, key, value):
    if container.get(key) == value:
        return False
    if key in container:
        container[key] = value
    else:
        container.append(key, _new_item(container, value))
    return True


def apply_isolation(
    doc,
    *,
    concurrent=None,
    node_selector=None,
    node_tolerations=None,
    cpu_request=None,
    memory_request=None,
    runner_names=None,
    source="config.toml",
):
    """Edit ``doc`` in place for isolation; returns the names of the runners changed (and
    ``concurrent`` as ``"<global>"`` when that changed).

    ``node_tolerations`` is a map ``{"key=value": "Effect"}``. Only ``[[runners]]`` entries with
    ``executor = "kubernetes"`` are edited, and only those named in ``runner_names`` when given.
    """
    require_tomlkit()
    changed = []
    if concurrent is not None and _set_key(doc, "concurrent", int(concurrent)):
        changed.append("<global>")
    runners = _runners(doc, source)
    names = set(runner_names or [])
    selected = [
        r for r in runners if r.get("executor") == "kubernetes" and (not names or r.get("name") in names)
    ]
    missing = names - {r.get("name") for r in selected}
    if missing:
        raise RunnerConfigError(
            '%s: no [[runners]] entry with executor = "kubernetes" named %s (found: %s)'
            % (
                source,
                ", ".join(sorted(repr(n) for n in missing)),
                ", ".join(repr(r.get("name")) for r in runners) or "none",
            )
        )
    wants_runner_edit = node_selector or node_tolerations or cpu_request or memory_request
    if wants_runner_edit and not selected:
        raise RunnerConfigError('%s: no [[runners]] entry with executor = "kubernetes" to edit' % source)
    for runner in selected:
        kube = runner.get("kubernetes")
        if kube is None:
            kube = tomlkit.table()
            runner["kubernetes"] = kube
        edits = False
        # plain keys first: tomlkit keeps them above the sub-tables
        if cpu_request is not None:
            edits |= _set_key(kube, "cpu_request", str(cpu_request))
        if memory_request is not None:
            edits |= _set_key(kube, "memory_request", str(memory_request))
        if node_selector:
            edits |= _set_map(kube, "node_selector", dict(node_selector))
        if node_tolerations:
            edits |= _set_map(kube, "node_tolerations", dict(node_tolerations))
        if edits:
            changed.append(runner.get("name") or "<unnamed>")
    validate(doc, source)
    return changed


def edit(text, source="config.toml", **settings):
    """(new text, changed runner names) for ``text`` edited by ``apply_isolation``."""
    doc = parse(text, source)
    changed = apply_isolation(doc, source=source, **settings)
    new = tomlkit.dumps(doc)
    parse(new, source + " (as edited)")  # what we write must read back and pass the checks
    return new, changed
