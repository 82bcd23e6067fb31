# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which objects of a rendered set a server-side apply would change, from one LIST per kind.

A re-apply of an unchanged set sends one PATCH per object although none changes anything; with
hundreds of objects that is the slow part of a converged run. An object is skipped only when both
hold (pure functions, no API calls here):

* its live ``strata.io/applied-hash`` annotation is the hash of the object as rendered now: what
  was last applied is what is rendered, so no field the applier owned has been dropped from it;
* every field it renders has that value in the live object (``is_subset``): nobody changed one
  since (``kubectl scale`` on replicas, an edited image). Quantities compare by value
  (``2000m`` is ``2``), Secret ``stringData`` against the base64 ``data`` the server keeps.

Anything else, or any doubt, is applied; server-side apply itself decides what changes.
``plan`` is pure; ``read_and_plan`` (the module strata.ops.k8s_apply_plan) does the LISTs.
"""

import base64
import binascii
import hashlib
import json

from ansible_collections.strata.ops.plugins.module_utils.cluster_config import quantity_value
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import RESOURCES
from ansible_collections.strata.ops.plugins.module_utils.k8s_options import K8S_AUTH_ARGSPEC

HASH_ANNOTATION = "strata.io/applied-hash"
# The options of strata.ops.k8s_apply_plan: the module and its action plugin validate with this one.
ARGUMENT_SPEC = dict(
    K8S_AUTH_ARGSPEC,
    definitions=dict(type="raw", required=True),
    prune_labels=dict(type="dict", default={}),
    prune_kinds=dict(type="list", elements="str", default=[]),
)


def applied_hash(obj):
    """sha256 of the object as rendered (its own hash annotation left out), canonical JSON."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    text = json.dumps(dict(obj, metadata=meta), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_hash(obj):
    """A copy of the object carrying its hash annotation, as it is applied."""
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = dict(meta.get("annotations") or {}, **{HASH_ANNOTATION: applied_hash(obj)})
    return dict(obj, metadata=meta)


def identity(obj):
    """(apiVersion, kind, namespace, name): what an object is, across versions of it."""
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")


def _same_quantity(want, have):
    try:
        return quantity_value(str(want)) == quantity_value(str(have))
    except (ValueError, ArithmeticError):
        return False


def is_subset(want, have, quantities=False):
    """Whether every field of ``want`` has that value in ``have`` (lists: same length, item by
    item). Under ``resources`` values compare as Kubernetes quantities."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(
            is_subset(value, have[key], quantities or key in ("requests", "limits"))
            if key in have
            else value in ([], {})  # the server drops an empty list or map
            for key, value in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h, quantities) for w, h in zip(want, have))
        )
    if want == have and type(want) is type(have):
        return True
    return quantities and _same_quantity(want, have)


def _decoded(data):
    out = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError):
            return None
    return out


def unchanged(rendered, live):
    """Whether applying ``rendered`` over ``live`` would change nothing (see the module doc)."""
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    if annotations.get(HASH_ANNOTATION) != applied_hash(rendered):
        return False
    want = dict(rendered)
    if rendered.get("kind") == "Secret" and "stringData" in rendered:
        # The server keeps stringData as base64 data; compare the decoded values.
        decoded = _decoded(live.get("data"))
        if decoded is None or not is_subset(want.pop("stringData"), decoded):
            return False
    want.pop("apiVersion", None)  # a list's items may name another served version
    return is_subset(want, live)


def plan(definitions, live_objects, prune_labels=None, prune_kinds=()):
    """What to do for a rendered set: {"apply": [...], "unchanged": count, "stale": [refs]}.

    ``live_objects``: the listed objects of the rendered kinds (and of the prunable ones);
    ``prune_labels``: labels every object of the set carries; a live object of ``prune_kinds`` with
    them, in a namespace of the set, that the set no longer renders is stale. Other namespaces
    (another copy of the pipeline) and cluster-scoped objects are never stale."""
    live_by_id = {}
    for obj in live_objects:
        live_by_id[identity(obj)[1:]] = obj
    to_apply, kept, rendered_ids = [], 0, set()
    for obj in definitions:
        key = identity(obj)[1:]  # kind, namespace, name
        rendered_ids.add(key)
        live = live_by_id.get(key)
        if live is not None and unchanged(obj, live):
            kept += 1
        else:
            to_apply.append(with_hash(obj))
    stale = []
    namespaces = {namespace for _kind, namespace, _name in rendered_ids} - {""}
    for key, obj in sorted(live_by_id.items()) if prune_labels else ():
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if (
            key not in rendered_ids
            and key[0] in prune_kinds
            and key[1] in namespaces
            and all(labels.get(k) == v for k, v in prune_labels.items())
        ):
            stale.append(ref(obj))
    return {"apply": to_apply, "unchanged": kept, "stale": stale}


def ref(obj):
    api_version, kind, namespace, name = identity(obj)
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def _checked(definitions):
    """The definitions' problems, all at once, before anything is read."""
    problems = []
    for index, obj in enumerate(definitions):
        api_version, kind, namespace, name = identity(obj)
        where = f"definitions[{index}] ({kind or 'no kind'} {name or 'no name'})"
        if kind not in RESOURCES:
            problems.append(f"{where}: kind must be one of {', '.join(sorted(RESOURCES))}")
            continue
        if api_version != RESOURCES[kind][0]:
            problems.append(f"{where}: apiVersion must be {RESOURCES[kind][0]}, got {api_version or 'none'}")
        if not name:
            problems.append(f"{where}: metadata.name is missing")
        if RESOURCES[kind][2] != bool(namespace):
            need = (
                "needs metadata.namespace"
                if RESOURCES[kind][2]
                else "is cluster-scoped: no metadata.namespace"
            )
            problems.append(f"{where}: a {kind} {need}")
    if problems:
        raise InvalidArgument(
            f"{len(problems)} of the definitions cannot be applied; nothing was read: " + "; ".join(problems)
        )


def _definitions(value):
    """The objects: a list, or the JSON text of one (``objects | to_json``: one string is much
    cheaper for Ansible to template and pass than hundreds of nested maps)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidArgument(
                f"definitions is text but not JSON ({exc}): give a list of objects"
            ) from None
    if not isinstance(value, list) or not all(isinstance(obj, dict) for obj in value):
        raise InvalidArgument("definitions must be a list of objects (maps), or the JSON text of one")
    return value


def read_and_plan(params, make_client):
    """The module's work: LIST the kinds (one request each, or one per namespace without prune
    labels), then ``plan``."""
    definitions = _definitions(params["definitions"])
    _checked(definitions)
    unknown = [kind for kind in params["prune_kinds"] if kind not in RESOURCES]
    if unknown:
        raise InvalidArgument(
            f"prune_kinds: {', '.join(unknown)} not one of {', '.join(sorted(RESOURCES))}; nothing was read"
        )
    prune_labels = {str(k): str(v) for k, v in params["prune_labels"].items()}
    selector = ",".join(f"{k}={v}" for k, v in sorted(prune_labels.items())) or None
    kinds = sorted({identity(obj)[1] for obj in definitions} | set(params["prune_kinds"] if selector else ()))
    namespaces = sorted({identity(obj)[2] for obj in definitions} - {""})
    client = make_client()
    live, requests = [], 0
    existing_namespaces = None
    for kind in kinds:
        if not RESOURCES[kind][2] or selector:
            items, _version = client.list(kind, label_selector=selector)
            live.extend(items)
            requests += 1
            continue
        for namespace in namespaces:
            items, _version = client.list(kind, namespace=namespace)
            live.extend(items)
            requests += 1
    if "Namespace" in kinds and not selector:
        existing_namespaces = {identity(obj)[3] for obj in live if obj.get("kind") == "Namespace"}
    if existing_namespaces is None:
        items, _version = client.list("Namespace")
        requests += 1
        existing_namespaces = {identity(obj)[3] for obj in items}
    result = plan(definitions, live, prune_labels, params["prune_kinds"])
    result.update(
        changed=False,
        new_namespaces=[ns for ns in namespaces if ns not in existing_namespaces],
        requests=requests,
    )
    return result
