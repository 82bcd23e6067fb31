# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The k3s data-miner pipeline's ``cluster_config.yaml``: schema, references, checks.

Pure logic (no Ansible, no YAML library): ``check(doc)`` takes the loaded document and returns a
``Checked`` with the document after ``${a.b}`` references are resolved, every problem found (each
``"<dotted.path>: <what is wrong>"``, e.g. ``workers.filter.schedule_on: 'gpus' is not one of all,
master, gpu``) and warnings. The inventory plugin ``strata.ops.cluster_config`` builds groups and
variables from the result with ``nodes(checked.doc)``.

The schema is data (``SCHEMA``): every map either names its keys (unknown ones are refused, with
the allowed ones) or is a map of named entries of one shape (``map_of``). ``k3s_app_overrides`` is
the one open map: its keys are the application's own settings.

References: ``${a.b.c}`` anywhere in a string value is replaced by the value at that dotted path
of the document, transitively; a string that is exactly one reference takes the referenced
value's type. ``$${`` is a literal ``${``. Dangling references, cycles and references to a map or
a list are problems named with the path where they occur.
"""

import difflib
import ipaddress
import re
from decimal import Decimal

from ansible_collections.strata.ops.plugins.module_utils.runner_config import (
    label_key_problem,
    label_value_problem,
    quantity_problem,
)

ROLES = ("master", "worker")
SCHEDULE_ON = ("all", "master", "gpu")
WORKER_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
INFRA_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# How pods share a node's GPU: ``runtime`` (the operators' choice: nvidia is containerd's default
# runtime and no pod requests nvidia.com/gpu), ``time_slicing`` (the device plugin advertises each GPU
# ``time_slices`` times), ``exclusive`` (one GPU per pod). The cluster role's cluster_k3s_gpu_sharing.
GPU_SHARING = ("runtime", "time_slicing", "exclusive")
DEFAULT_TIME_SLICES = 4
# Node labels that mark a GPU node as the cluster role and NVIDIA's GPU feature discovery set them.
GPU_LABELS = ("strata.io/gpu", "nvidia.com/gpu.present")

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_K3S_VERSION = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\+k3s[0-9]+")
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_REFERENCE_PATH = re.compile(r"[^.\s${}]+(\.[^.\s${}]+)*")
_QUANTITY_NUMBER = re.compile(r"([+-]?[0-9]*(?:\.[0-9]*)?)(.*)")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


# --- value checks: each returns None or what is wrong ------------------------------------------


def _dns_label(value):
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        return f"{value!r} is not a DNS-1123 label (lower case alphanumerics and '-', at most 63)"
    return None


def _node_name(value):
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        return (
            f"{value!r} is not a Kubernetes node name (a DNS-1123 subdomain: lower case alphanumerics, "
            "'-' and '.')"
        )
    return None


def _ip(value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def _k3s_version(value):
    if not _K3S_VERSION.fullmatch(value):
        return f"{value!r} is not a k3s release (vMAJOR.MINOR.PATCH+k3sN, such as v1.31.0+k3s1)"
    return None


def _absolute(value):
    if not value.startswith("/"):
        return f"{value!r} is not an absolute path"
    return None


def _label_key(key):
    problem = label_key_problem(key)
    return f"{key!r} {problem}" if problem else None


def _label_value(value):
    problem = label_value_problem(value)
    return f"{value!r} {problem}" if problem else None


def _not_empty(value):
    return "is empty" if not value.strip() else None


def quantity_value(text):
    """The value of a Kubernetes quantity that ``quantity_problem`` accepts, as a Decimal."""
    number, suffix = _QUANTITY_NUMBER.fullmatch(text).groups()
    base = Decimal(number) if number.strip("+-.") else Decimal(0)
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base.scaleb(_DECIMAL[suffix])
    return base.scaleb(int(suffix[1:]))  # an exponent: e3, E-2


def _range(value):
    """A resource preset's ``request-limit`` (``250m-1000m``): two quantities, request <= limit."""
    splits = []
    for index, char in enumerate(value):
        if char == "-" and index and value[index - 1] not in "eE":
            request, limit = value[:index], value[index + 1 :]
            if not quantity_problem(request) and not quantity_problem(limit):
                splits.append((request, limit))
    if not splits:
        return (
            f"{value!r} is not REQUEST-LIMIT with two Kubernetes quantities (such as 250m-1000m or 512Mi-2Gi)"
        )
    request, limit = splits[0]
    if quantity_value(request) > quantity_value(limit):
        return f"{value!r}: the request {request} is more than the limit {limit} (Kubernetes refuses it)"
    return None


# --- the schema as data ---------------------------------------------------------------------


def scalar(kind, *, required=False, choices=None, check=None, minimum=None, maximum=None):
    """A leaf: kind is "str", "int" or "bool"."""
    return {
        "kind": kind,
        "required": required,
        "choices": choices,
        "check": check,
        "min": minimum,
        "max": maximum,
    }


def fields(keys, required=False):
    """A map with exactly these keys (each a spec); unknown keys are refused."""
    return {"kind": "fields", "keys": keys, "required": required}


def map_of(value, key_check=None, required=False, min_entries=0):
    """A map of named entries, each of the shape ``value``."""
    return {
        "kind": "map_of",
        "value": value,
        "key_check": key_check,
        "required": required,
        "min": min_entries,
    }


def list_of(item, required=False, min_entries=0):
    """A list, each element of the shape ``item`` (paths name the index as references do: ``a.b.2``)."""
    return {"kind": "list_of", "item": item, "required": required, "min": min_entries}


OPEN = {"kind": "open", "required": False}

# A liveness probe only where a worker states one (the operators' download workers were killed in a
# loop by a probe on /tmp/healthy, a file nothing wrote): exactly one of exec, http, tcp.
PROBE = fields(
    {
        "exec": list_of(scalar("str", check=_not_empty), min_entries=1),
        "http": fields(
            {
                "path": scalar("str", required=True, check=_absolute),
                "port": scalar("int", required=True, minimum=1, maximum=65535),
            }
        ),
        "tcp": fields({"port": scalar("int", required=True, minimum=1, maximum=65535)}),
        "initial_delay_seconds": scalar("int", minimum=0),
        "period_seconds": scalar("int", minimum=1),
        "failure_threshold": scalar("int", minimum=1),
    }
)
PROBE_KINDS = ("exec", "http", "tcp")

NODE = fields(
    {
        "ip": scalar("str", required=True, check=_ip),
        "role": scalar("str", required=True, choices=ROLES),
        "disk_limit_mb": scalar("int", minimum=0),
        "storage_only": scalar("bool"),
        "gpu": scalar("bool"),
        "labels": map_of(scalar("str", check=_label_value), key_check=_label_key),
    }
)
WORKER = fields(
    {
        "kind": scalar("str", choices=WORKER_KINDS),
        "replicas": scalar("int", minimum=0),
        "schedule_on": scalar("str", choices=SCHEDULE_ON),
        "hf_token": scalar("bool"),
        "resources": scalar("str"),
        "probe": PROBE,
    }
)
INFRA = fields(
    {
        "kind": scalar("str", choices=INFRA_KINDS),
        "image": scalar("str", required=True, check=_not_empty),
        "port": scalar("int", minimum=1, maximum=65535),
        "node_port": scalar("int", minimum=30000, maximum=32767),
        "replicas": scalar("int", minimum=0),
        "schedule_on": scalar("str", choices=SCHEDULE_ON),
        "resources": scalar("str"),
    }
)
SCHEMA = fields(
    {
        "cluster": fields(
            {
                "namespace": scalar("str", required=True, check=_dns_label),
                "k3s_version": scalar("str", check=_k3s_version),
                "nodes": map_of(NODE, key_check=_node_name, required=True, min_entries=1),
                "gpu_sharing": fields(
                    {
                        "mode": scalar("str", required=True, choices=GPU_SHARING),
                        "time_slices": scalar("int", minimum=2),
                    }
                ),
            },
            required=True,
        ),
        "storage": fields(
            {
                "seaweedfs_mount": scalar("str", check=_absolute),
                "db_path": scalar("str", check=_absolute),
            }
        ),
        "image": fields(
            {
                "name": scalar("str", required=True, check=_not_empty),
                "tag": scalar("str", check=_not_empty),
                "pull_policy": scalar("str", choices=PULL_POLICIES),
            }
        ),
        "seaweedfs": fields(
            {
                "namespace": scalar("str", check=_dns_label),
                "image": scalar("str", check=_not_empty),
                "data_dir": scalar("str", check=_absolute),
                "default_disk_limit_mb": scalar("int", minimum=0),
            }
        ),
        "resource_presets": map_of(
            fields(
                {
                    "cpu": scalar("str", required=True, check=_range),
                    "memory": scalar("str", required=True, check=_range),
                }
            ),
            key_check=_dns_label,
        ),
        "workers": map_of(WORKER, key_check=_dns_label),
        "infrastructure": map_of(INFRA, key_check=_dns_label),
        "k3s_app_overrides": OPEN,
    }
)

_KIND_WORDS = {"str": "a string", "int": "an integer", "bool": "a boolean (true or false)"}


def _type_name(value):
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value!r}".replace("True", "true").replace("False", "false")
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


class _Validator:
    def __init__(self, skip):
        self.errors = []
        self.skip = skip  # paths whose references did not resolve: already reported

    def add(self, path, problem):
        self.errors.append(f"{path or '(top level)'}: {problem}")

    def check(self, spec, value, path):
        if path in self.skip:
            return
        kind = spec["kind"]
        if kind in _KIND_WORDS:  # str, int, bool
            self._scalar(spec, value, path)
            return
        shape = list if kind == "list_of" else dict
        if not isinstance(value, shape):
            self.add(path, f"expected a {'list' if shape is list else 'map'}, got {_type_name(value)}")
            return
        {"open": self._open, "list_of": self._list_of, "fields": self._fields, "map_of": self._map_of}[kind](
            spec, value, path
        )

    def _open(self, _spec, value, path):
        for key in value:
            if not isinstance(key, str):
                self.add(_join(path, key), "keys must be strings")

    def _list_of(self, spec, value, path):
        if len(value) < spec["min"]:
            self.add(path, f"needs at least {spec['min']} element")
        for index, item in enumerate(value):
            self.check(spec["item"], item, _join(path, index))

    def _fields(self, spec, value, path):
        allowed = spec["keys"]
        for key, item in value.items():
            if key not in allowed:
                where = f"allowed in {path}" if path else "allowed at the top level"
                hint = difflib.get_close_matches(str(key), list(allowed), n=1)
                guess = f"; did you mean {hint[0]}?" if hint else ""
                self.add(_join(path, key), f"unknown key ({where}: {', '.join(allowed)}){guess}")
                continue
            self.check(allowed[key], item, _join(path, key))
        for key, sub in allowed.items():
            if sub["required"] and key not in value:
                self.add(_join(path, key), "is required")

    def _map_of(self, spec, value, path):
        if len(value) < spec["min"]:
            self.add(path, f"needs at least {spec['min']} entry")
        for key, entry in value.items():
            item = entry
            if not isinstance(key, str):
                self.add(_join(path, key), f"the name {key!r} must be a string")
                continue
            if spec["key_check"]:
                problem = spec["key_check"](key)
                if problem:
                    self.add(_join(path, key), f"the name {problem}")
            if item is None and spec["value"]["kind"] == "fields":
                item = {}  # `name:` with nothing is an entry with no settings
            self.check(spec["value"], item, _join(path, key))

    def _scalar(self, spec, value, path):
        kind = spec["kind"]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            hint = f' (quote it: "{value}")' if kind == "str" and isinstance(value, (int, float)) else ""
            self.add(path, f"expected {_KIND_WORDS[kind]}, got {_type_name(value)}{hint}")
            return
        if spec["choices"] and value not in spec["choices"]:
            self.add(path, f"{value!r} is not one of {', '.join(spec['choices'])}")
            return
        if spec["min"] is not None and value < spec["min"]:
            self.add(path, f"{value} is less than {spec['min']}")
        if spec["max"] is not None and value > spec["max"]:
            self.add(path, f"{value} is more than {spec['max']}")
        if spec["check"]:
            problem = spec["check"](value)
            if problem:
                self.add(path, problem)


# --- references -----------------------------------------------------------------------------


class _Resolver:
    """Resolves ``${a.b}`` in every string of the document, transitively."""

    def __init__(self, doc):
        self.doc = doc
        self.errors = []
        self.bad = set()  # paths whose value did not resolve
        self.done = {}  # path -> resolved value
        self.active = []  # paths being resolved, for cycles

    def run(self):
        return self._walk(self.doc, "")

    def _walk(self, value, path):
        if isinstance(value, dict):
            return {key: self._walk(item, _join(path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self._walk(item, _join(path, index)) for index, item in enumerate(value)]
        if isinstance(value, str):
            return self._string(value, path)
        return value

    def _lookup(self, target):
        """(path, value) at the dotted ``target``, keys with dots taken whole where they exist;
        or (None, what exists at the deepest level reached)."""
        parts = target.split(".")
        node, path, index = self.doc, "", 0
        while index < len(parts):
            if isinstance(node, dict):
                for end in range(len(parts), index, -1):
                    key = ".".join(parts[index:end])
                    if key in node:
                        node, path, index = node[key], _join(path, key), end
                        break
                else:
                    keys = ", ".join(str(key) for key in node) or "nothing"
                    return None, f"{path or 'the top level'} has {keys}"
            elif isinstance(node, list) and parts[index].isdigit() and int(parts[index]) < len(node):
                node, path, index = node[int(parts[index])], _join(path, parts[index]), index + 1
            else:
                return None, f"{path} is {_type_name(node)}"
        return path, node

    def _resolve_target(self, target, path):
        """The resolved value at the dotted ``target``, or raise _Unresolved."""
        found, value = self._lookup(target)
        if found is None:
            self._fail(path, f"${{{target}}} refers to nothing ({value})")
        if isinstance(value, (dict, list)):
            self._fail(
                path, f"${{{target}}} refers to {_type_name(value)}; only a single value can be referenced"
            )
        if found in self.bad:
            raise _Unresolved
        if found in self.done:
            return self.done[found]
        if found in self.active:
            cycle = [*self.active[self.active.index(found) :], found]
            self._fail(path, "reference cycle: " + " -> ".join(cycle))
        if isinstance(value, str):
            value = self._string(value, found)
            if found in self.bad:  # reported where it fails; this use fails with it
                raise _Unresolved
        return value

    def _fail(self, path, problem):
        self.errors.append(f"{path}: {problem}")
        raise _Unresolved

    def _string(self, text, path):
        if path in self.done:
            return self.done[path]
        if path in self.bad:
            return text
        if "$" not in text:
            return text
        self.active.append(path)
        try:
            resolved = self._substitute(text, path)
        except _Unresolved:
            self.bad.add(path)
            return text
        finally:
            self.active.pop()
        self.done[path] = resolved
        return resolved

    def _substitute(self, text, path):
        matches = list(_REFERENCE.finditer(text))
        whole = len(matches) == 1 and matches[0].group(0) != "$${" and matches[0].span() == (0, len(text))
        pieces, last = [], 0
        for match in matches:
            pieces.append(text[last : match.start()])
            last = match.end()
            if match.group(0) == "$${":
                pieces.append("${")
                continue
            target = match.group(1).strip()
            if not _REFERENCE_PATH.fullmatch(target):
                self._fail(path, f"{match.group(0)} is not a reference (${{key.key...}})")
            value = self._resolve_target(target, path)
            if whole:
                return value
            if value is None:
                self._fail(path, f"${{{target}}} is null and cannot be put into a string")
            pieces.append(str(value).lower() if isinstance(value, bool) else str(value))
        pieces.append(text[last:])
        return "".join(pieces)


class _Unresolved(Exception):  # internal control flow, never leaves this module
    pass


# --- the whole check ------------------------------------------------------------------------


class Checked:
    """The result of ``check``: ``doc`` (references resolved), ``errors``, ``warnings``."""

    def __init__(self, doc, errors, warnings):
        self.doc = doc
        self.errors = errors
        self.warnings = warnings

    @property
    def ok(self):
        return not self.errors


def node_is_gpu(node):
    labels = node.get("labels") or {}
    return bool(node.get("gpu")) or any(str(labels.get(key, "")).lower() == "true" for key in GPU_LABELS)


def _node_checks(nodes, errors):
    seen = {}
    for name, node in nodes.items():
        ip = node.get("ip")
        if isinstance(ip, str) and ip in seen:
            errors.append(f"cluster.nodes.{name}.ip: {ip} is also the ip of cluster.nodes.{seen[ip]}")
        seen.setdefault(ip, name)
        if node.get("role") == "master" and node.get("storage_only") is True:
            errors.append(
                f"cluster.nodes.{name}.storage_only: the master cannot be storage_only (workers with "
                "schedule_on: master run there)"
            )
        labels = node.get("labels") if isinstance(node.get("labels"), dict) else {}
        for key in GPU_LABELS:
            if node.get("gpu") is False and str(labels.get(key, "")).lower() == "true":
                errors.append(f"cluster.nodes.{name}.gpu: false, but its label {key} says true")


def _cross_checks(doc, errors, warnings):
    cluster = doc.get("cluster") if isinstance(doc.get("cluster"), dict) else {}
    nodes = cluster.get("nodes") if isinstance(cluster.get("nodes"), dict) else {}
    nodes = {name: node for name, node in nodes.items() if isinstance(node, dict)}
    masters = [name for name, node in nodes.items() if node.get("role") == "master"]
    if nodes and len(masters) != 1:
        found = f"{len(masters)} ({', '.join(masters)})" if masters else "none"
        errors.append(
            f"cluster.nodes: exactly one node must have role master (the k3s server), found {found}"
        )
    _node_checks(nodes, errors)
    presets = doc.get("resource_presets") if isinstance(doc.get("resource_presets"), dict) else {}
    gpu_nodes = [n for n, node in nodes.items() if node_is_gpu(node) and node.get("storage_only") is not True]
    _gpu_sharing_checks(doc, cluster, gpu_nodes, errors, warnings)
    workers = doc.get("workers") if isinstance(doc.get("workers"), dict) else {}
    for name, entry in workers.items():
        if isinstance(entry, dict) and isinstance(entry.get("probe"), dict):
            _probe_checks(f"workers.{name}.probe", entry["probe"], errors, warnings)
    for section in ("workers", "infrastructure"):
        entries = doc.get(section) if isinstance(doc.get(section), dict) else {}
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                continue
            preset = entry.get("resources")
            if isinstance(preset, str) and preset not in presets:
                have = ", ".join(presets) or "none"
                errors.append(
                    f"{section}.{name}.resources: {preset!r} is not a preset of resource_presets ({have})"
                )
            if entry.get("schedule_on") == "gpu" and nodes and not gpu_nodes:
                warnings.append(
                    f"{section}.{name}.schedule_on: gpu, but no node that takes workers is marked as a GPU "
                    f"node (set gpu: true or the label {GPU_LABELS[0]}: 'true' under cluster.nodes.<name>)"
                )


# Commands that only look at a file: the probe holds only while something keeps writing it.
_FILE_LOOKS = ("test", "[", "cat", "ls", "stat", "head")


def _probe_checks(path, probe, errors, warnings):
    given = [kind for kind in PROBE_KINDS if kind in probe]
    if len(given) != 1:
        found = ", ".join(given) or "none"
        errors.append(f"{path}: give exactly one of {', '.join(PROBE_KINDS)} (found {found})")
        return
    command = probe.get("exec")
    if isinstance(command, list) and command and isinstance(command[0], str):
        words = " ".join(str(word) for word in command).split()
        program = words[0].rsplit("/", 1)[-1]
        shell = program in ("sh", "bash") and "-c" in words
        files = [w for w in words[1:] if w.startswith("/")]
        if files and (program in _FILE_LOOKS or (shell and any(w in _FILE_LOOKS for w in words))):
            warnings.append(
                f"{path}.exec: the probe only looks at {files[-1]}; the pods are restarted in a loop "
                "unless the worker keeps writing it (the operators' download workers died on a probe of "
                "/tmp/healthy that nothing wrote). Make sure it does, or probe http or tcp"
            )


def gpu_sharing(doc):
    """(mode, time slices) of a checked config; time slices is None unless mode is time_slicing."""
    sharing = (doc.get("cluster") or {}).get("gpu_sharing") or {}
    mode = sharing.get("mode", GPU_SHARING[0])
    return mode, sharing.get("time_slices", DEFAULT_TIME_SLICES) if mode == "time_slicing" else None


def _gpu_sharing_checks(doc, cluster, gpu_nodes, errors, warnings):
    sharing = cluster.get("gpu_sharing") if isinstance(cluster.get("gpu_sharing"), dict) else {}
    mode = sharing.get("mode")
    if "time_slices" in sharing and mode in GPU_SHARING and mode != "time_slicing":
        errors.append(f"cluster.gpu_sharing.time_slices: only with mode time_slicing (mode is {mode})")
    if mode not in ("exclusive", "time_slicing") or not gpu_nodes:
        return
    pods = 0
    for section in ("workers", "infrastructure"):
        entries = doc.get(section) if isinstance(doc.get(section), dict) else {}
        for entry in entries.values():
            if isinstance(entry, dict) and entry.get("schedule_on") == "gpu":
                daemon = entry.get("kind") == "DaemonSet"
                replicas = entry.get("replicas", 1)
                pods += len(gpu_nodes) if daemon else replicas if isinstance(replicas, int) else 0
    slices = sharing.get("time_slices", DEFAULT_TIME_SLICES) if mode == "time_slicing" else 1
    capacity = len(gpu_nodes) * slices if isinstance(slices, int) else pods
    if pods > capacity:
        # The operators' incident: one GPU, several pods asking for one each, the rest Pending.
        warnings.append(
            f"cluster.gpu_sharing.mode: {mode} gives {capacity} GPU slot(s) ({len(gpu_nodes)} GPU node(s)"
            f"{f' x {slices} time slices' if mode == 'time_slicing' else ''}, one GPU each), but the "
            f"schedule_on: gpu entries ask for {pods} pods: {pods - capacity} will stay Pending. Use mode "
            "runtime (no nvidia.com/gpu requests) or more time slices"
        )


def check(doc):
    """Resolve references in ``doc`` and check it against ``SCHEMA``; a ``Checked``."""
    if not isinstance(doc, dict):
        return Checked(doc, [f"(top level): expected a map with a cluster key, got {_type_name(doc)}"], [])
    resolver = _Resolver(doc)
    resolved = resolver.run()
    validator = _Validator(resolver.bad)
    validator.check(SCHEMA, resolved, "")
    errors = resolver.errors + validator.errors
    warnings = []
    _cross_checks(resolved, errors, warnings)
    return Checked(resolved, errors, warnings)


def nodes(doc):
    """Per node of a checked, resolved config (in file order, the master first): the facts the
    inventory and the rendered manifests are built from."""
    default_limit = (doc.get("seaweedfs") or {}).get("default_disk_limit_mb", 0)
    workers = doc.get("workers") or {}
    out = []
    for name, entry in doc["cluster"]["nodes"].items():
        node = entry or {}
        storage_only = bool(node.get("storage_only"))
        gpu = node_is_gpu(node)
        role = node["role"]
        eligible = []
        for worker, spec in workers.items():
            where = (spec or {}).get("schedule_on", "all")
            if storage_only:
                continue
            if where == "all" or (where == "master" and role == "master") or (where == "gpu" and gpu):
                eligible.append(worker)
        out.append(
            {
                "name": name,
                "ip": node["ip"],
                "role": role,
                "disk_limit_mb": node.get("disk_limit_mb", default_limit),
                "storage_only": storage_only,
                "gpu": gpu,
                "labels": dict(node.get("labels") or {}),
                "workers": eligible,
            }
        )
    out.sort(key=lambda entry: entry["role"] != "master")  # stable: the master first
    return out
