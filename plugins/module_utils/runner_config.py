# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Edits and checks of gitlab-runner's config.toml with tomlkit (comments and order kept).

What the Kubernetes executor reads (https://docs.gitlab.com/runner/executors/kubernetes/):

* ``[runners.kubernetes.node_selector]`` — a map of strings, ``"label" = "value"``; a job pod
  goes only to a node with ALL of them, so isolation replaces the entries (the recorded bytes
  bring the old ones back).
* ``[runners.kubernetes.node_tolerations]`` — a MAP: ``"key=value" = "Effect"`` (``"key" =
  "Effect"`` for a key-only toleration, operator Exists). The array-of-tables form
  ``[[runners.kubernetes.node_tolerations]]`` is not what the runner reads: job pods get no
  toleration and stay Pending on a tainted node. It is rejected with that explanation.
* ``cpu_request`` / ``memory_request`` (and ``*_limit``) keys in ``[runners.kubernetes]``. A
  ``[runners.kubernetes.resources.requests]`` block is ignored by the executor: rejected, with
  the keys to use instead.
* top-level ``concurrent``.

``settings_problems`` checks the values to write as gitlab-runner and Kubernetes would:
``concurrent`` a positive integer, the requests Kubernetes quantities (``quantity_problem``, a
port of apimachinery's ``ParseQuantity``), the node selector's entries label keys and values.

``restore`` is not an edit: the recorded bytes are written back as they were.

Helpers raise ``RunnerConfigError``; a module's ``main()`` catches it once.
"""

import re
import traceback

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

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


# The quantity grammar of Kubernetes (k8s.io/apimachinery pkg/api/resource: ParseQuantity in
# quantity.go, the suffixes in suffix.go), which gitlab-runner's Kubernetes executor parses
# cpu_request and memory_request with.
_DIGITS = "0123456789"
_SUFFIX_CHARS = "eEinumkKMGTP"
_DECIMAL_SUFFIXES = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}  # powers of 2
_NANO = -9
_INT64_MAX = 2**63 - 1
# Label keys and values (k8s.io/apimachinery pkg/api/validate/content: IsLabelKey, IsLabelValue):
# what the API server checks a pod's nodeSelector, a node's labels and taints with.
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")  # used with fullmatch
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_RULE = (
    "a label key is an optional DNS subdomain prefix and '/' and a name of at most 63 characters "
    "(alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric); a value is empty or "
    "such a name"
)


class RunnerConfigError(StrataError):
    """config.toml does not parse, holds a form the runner ignores, or cannot be edited."""


def _suffix_exponent(suffix):
    """The decimal exponent ParseQuantity takes from ``suffix`` (0 for the binary suffixes), or None
    where it refuses the suffix."""
    if suffix in _DECIMAL_SUFFIXES or suffix in _BINARY_SUFFIXES:
        return _DECIMAL_SUFFIXES.get(suffix, 0)
    if len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[+-]?[0-9]+", suffix[1:]):
        exponent = int(suffix[1:])
        if not -_INT64_MAX - 1 <= exponent <= _INT64_MAX:  # strconv.ParseInt(..., 10, 64) fails
            return None
        return (exponent + 2**31) % 2**32 - 2**31  # Go keeps it as an int32
    return None


def _scan_quantity(text):
    """(negative, digits) as ParseQuantity reads ``text``, or None where it fails."""
    if not text:
        return None
    pos, end = 0, len(text)
    negative = text[0] == "-"
    if text[0] in "+-":
        pos = 1
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num, denom = text[start:pos], ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:
        return None
    suffix = text[suffix_start:]
    exponent = _suffix_exponent(suffix)
    if exponent is None:
        return None
    digits = num + denom
    # Without a digit the number is 0 on ParseQuantity's fast path; its slow path (taken for
    # exponents below nano, and for Pi and Ei, whose precision estimate is negative there) parses
    # the number part alone and fails.
    if not digits and (exponent < _NANO or _BINARY_SUFFIXES.get(suffix, 0) >= 50):
        return None
    return negative, digits


def quantity_problem(value):
    """None when ``value`` is a Kubernetes quantity a resource request may hold (it parses and
    is not negative), else what is wrong with it."""
    if not isinstance(value, str):
        return "is not a string"
    scanned = _scan_quantity(value)
    if scanned is None:
        return (
            "is not a Kubernetes quantity: a number with an optional suffix and no spaces, such as "
            '"500m" or "2" (cpu), "2Gi" or "2G" (memory); suffixes Ki Mi Gi Ti Pi Ei, n u m k M G T P E, '
            "or an exponent like 2e9"
        )
    negative, digits = scanned
    if negative and digits.strip("0"):
        return "is negative: Kubernetes refuses a negative request"
    return None


def label_key_problem(key):
    """None when ``key`` is a valid Kubernetes label key (or taint/toleration key)."""
    if not isinstance(key, str):
        return "is not a string"
    parts = key.split("/")
    if len(parts) > 2:
        return "has more than one '/'"
    if len(parts) == 2 and not (len(parts[0]) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(parts[0])):
        return "has a prefix that is not a DNS subdomain (lower case alphanumeric, '-' and '.')"
    name = parts[-1]
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return "is not a label name"
    return None


def label_value_problem(value):
    """None when ``value`` is a valid Kubernetes label value (or taint value)."""
    if not isinstance(value, str):
        return "is not a string"
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return "is not a label value"
    return None


def settings_problems(concurrent=None, node_selector=None, cpu_request=None, memory_request=None):
    """What is wrong with the values ``apply_isolation`` would write, as gitlab-runner and
    Kubernetes would find it (an empty list when nothing is)."""
    problems = []
    # gitlab-runner's global `concurrent`: jobs at once across all runners; 0 is not "unlimited"
    # (docs.gitlab.com/runner/configuration/advanced-configuration, the global section), and a
    # TOML integer is 64-bit.
    if concurrent is not None and (
        isinstance(concurrent, bool) or not isinstance(concurrent, int) or not 0 < concurrent <= _INT64_MAX
    ):
        problems.append(f"concurrent must be a positive integer (jobs at once), got {concurrent!r}")
    for name, value in (("cpu_request", cpu_request), ("memory_request", memory_request)):
        if value is None:
            continue
        problem = quantity_problem(value)
        if problem:
            problems.append(f"{name} {value!r} {problem}")
    if node_selector is not None:
        problems.extend(labels_problems("node_selector", node_selector))
    return problems


def labels_problems(name, labels):
    """What is wrong with the map ``labels`` as Kubernetes labels (a list; empty when nothing)."""
    if not isinstance(labels, dict):
        return [f'{name} must be a map of "label" = "value"']
    problems = []
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem:
            problems.append(f"{name} key {key!r} {problem} ({LABEL_RULE})")
            continue
        problem = label_value_problem(value)
        if problem:
            problems.append(f"{name} value {value!r} of {key!r} {problem} ({LABEL_RULE})")
    return problems


def require_tomlkit():
    if not HAS_TOMLKIT:
        raise RunnerConfigError(TOMLKIT_MISSING)


def toleration_key(key, value=None):
    """The map key of one toleration: ``key=value``, or ``key`` alone (operator Exists)."""
    return f"{key}={value}" if value not in (None, "") else key


def parse(text, source="config.toml"):
    """The tomlkit document of ``text`` (str or bytes), checked with ``validate``."""
    require_tomlkit()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunnerConfigError(f"{source} is not UTF-8 text: {exc}") from None
    try:
        doc = tomlkit.parse(text)
    except _TomlParseError as exc:
        raise RunnerConfigError(
            f"{source} does not parse as TOML (line {exc.line}, column {exc.col}): {exc}"
        ) from None
    validate(doc, source)
    return doc


def _runners(doc, source):
    runners = doc.get("runners")
    if runners is None:
        return []
    if isinstance(runners, _AoT) or (isinstance(runners, list) and all(isinstance(r, dict) for r in runners)):
        return list(runners)
    found = "plain table [runners]" if isinstance(runners, dict) else type(runners).__name__
    raise RunnerConfigError(
        f"{source}: 'runners' must be an array of tables ([[runners]], one per runner), found a {found}"
    )


def validate(doc, source="config.toml"):
    """Raise RunnerConfigError for the forms the Kubernetes executor ignores."""
    problems = []
    for index, runner in enumerate(_runners(doc, source)):
        runner_name = runner.get("name")
        label = f"[[runners]] #{index + 1} (name {runner_name!r})"
        kube = runner.get("kubernetes")
        if kube is None:
            continue
        if not isinstance(kube, dict):
            problems.append(f"{label}: runners.kubernetes must be a table")
            continue
        tolerations = kube.get("node_tolerations")
        if tolerations is not None and not isinstance(tolerations, dict):
            problems.append(
                f"{label}: [[runners.kubernetes.node_tolerations]] (an array of tables) is not read by "
                "gitlab-runner's Kubernetes executor: job pods get no toleration and stay Pending on a "
                "tainted node. Use the map form: [runners.kubernetes.node_tolerations] with one line "
                'per toleration, "key=value" = "Effect" (for example "experiment=dedicated" = '
                '"NoSchedule")'
            )
        selector = kube.get("node_selector")
        if selector is not None and not (
            isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values())
        ):
            problems.append(
                f'{label}: runners.kubernetes.node_selector must be a table of "label" = "value" (strings: '
                "gitlab-runner reads a map of string to string)"
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
                                hints.append(f"resources.{section}.{name} -> {new}")
            renamed = (" (" + ", ".join(hints) + ")") if hints else ""
            problems.append(
                f"{label}: [runners.kubernetes.resources.requests] (and .limits) is ignored by the "
                "Kubernetes executor, so the job pods would run without those requests. Use the executor's "
                "keys in [runners.kubernetes] instead: cpu_request, memory_request, cpu_limit, "
                f"memory_limit{renamed}"
            )
    if problems:
        raise RunnerConfigError(f"{source}: {'; '.join(problems)}")


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


def _replace_map(container, name, values):
    """Make the sub-table ``name`` of ``container`` hold exactly ``values`` (in that order);
    returns True when something changed."""
    table = container.get(name)
    if table is None:
        return _set_map(container, name, values)
    if dict(table) == values and list(table) == list(values):
        return False
    for key in [k for k in table if k not in values]:
        del table[key]
    _set_map(container, name, values)
    return True


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

    ``node_selector`` REPLACES the entries of ``[runners.kubernetes.node_selector]``: the
    executor requires every entry on the node a job pod runs on, so a label kept from before
    would have to be on the dedicated node too. ``node_tolerations`` (a map
    ``{"key=value": "Effect"}``) is merged into the existing ones. Only ``[[runners]]`` entries
    with ``executor = "kubernetes"`` are edited, and only those named in ``runner_names`` when
    given.
    """
    require_tomlkit()
    problems = settings_problems(concurrent, node_selector, cpu_request, memory_request)
    if problems:
        raise RunnerConfigError(f"{source}: not written, {'; '.join(problems)}")
    changed = []
    if concurrent is not None and _set_key(doc, "concurrent", concurrent):
        changed.append("<global>")
    runners = _runners(doc, source)
    names = set(runner_names or [])
    selected = [
        r for r in runners if r.get("executor") == "kubernetes" and (not names or r.get("name") in names)
    ]
    missing = names - {r.get("name") for r in selected}
    if missing:
        wanted = ", ".join(sorted(repr(n) for n in missing))
        found = ", ".join(repr(r.get("name")) for r in runners) or "none"
        raise RunnerConfigError(
            f'{source}: no [[runners]] entry with executor = "kubernetes" named {wanted} (found: {found})'
        )
    wants_runner_edit = node_selector or node_tolerations or cpu_request or memory_request
    if wants_runner_edit and not selected:
        raise RunnerConfigError(f'{source}: no [[runners]] entry with executor = "kubernetes" to edit')
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
            edits |= _replace_map(kube, "node_selector", dict(node_selector))
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
