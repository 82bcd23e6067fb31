# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The changes a request needs, as pure data (so check mode and diff are exact), from one read of
the datasets' state."""

from ansible_collections.strata.ops.plugins.module_utils.zfs import DIALECT_OPENZFS, ZfsValidationError
from ansible_collections.strata.ops.plugins.module_utils.zfs.properties import (
    CREATE_ONLY_PROPERTIES,
    SETTABLE_WITHOUT_SOURCE,
    _shown,
    is_within,
    normalize_value,
    pool_of,
    property_name_problem,
    source_kind,
    validate_dataset_name,
    value_problem,
)


class ZfsState:
    """What one ``zfs get`` pass saw, plus names known to exist from a ``zfs list``."""

    def __init__(self, datasets):
        self.datasets = datasets
        self.known = set()

    def add_existing(self, names):
        self.known.update(names)

    def exists(self, name):
        return name in self.datasets or name in self.known

    def get(self, name):
        return self.datasets.get(name)

    def children(self, name):
        prefix = name + "/"
        return sorted(n for n in self.datasets if n.startswith(prefix) and "@" not in n)

    def snapshots(self, name):
        prefix = name + "@"
        return sorted(n for n in self.datasets if n.startswith(prefix))

    def property(self, name, prop):
        entry = self.datasets.get(name)
        if entry is None:
            return None
        return entry["properties"].get(prop)


def normalize_request(item):
    return {
        "name": item["name"],
        "state": item.get("state") or "present",
        "properties": dict(item.get("properties") or {}),
        "recursive": bool(item.get("recursive", False)),
    }


def validate_requests(requests, pools, pool=None, dialect=None):
    """Syntax and pool membership of every request; raise one error listing all problems.

    Without a dialect, property names are checked against OpenZFS' (the larger set).
    """
    errors = []
    seen = set()
    if pool is not None and pool not in pools:
        raise ZfsValidationError(
            f"ZFS pool {pool!r} does not exist on this host (pools: {', '.join(pools) or 'none'})."
            f" Create or import it first (zpool create / zpool import {pool}); nothing was changed.",
            pools=pools,
        )
    for req in requests:
        name = req["name"]
        problem = validate_dataset_name(name)
        if problem:
            errors.append(problem)
            continue
        if name in seen:
            errors.append(f"dataset {name!r} is listed more than once")
        seen.add(name)
        errors.extend(_pool_problems(name, pools, pool))
        if req["state"] == "absent":
            if req["properties"]:
                errors.append(f"dataset {name!r}: properties make no sense with state=absent")
            if "/" not in name:
                errors.append(f"dataset {name!r} is a pool root; destroying pools is not done here")
        for prop in req["properties"]:
            problem = property_name_problem(prop, dialect)
            if problem:
                errors.append(f"dataset {name!r}: {problem}")
    errors.extend(_present_below_absent(requests))
    if errors:
        raise ZfsValidationError(
            "invalid datasets request, nothing was changed: " + "; ".join(errors), errors=errors
        )


def _pool_problems(name, pools, pool):
    """Why dataset ``name`` is not in ``pool`` (when given) or in a pool of this host."""
    if pool is not None and pool_of(name) != pool:
        return [f"dataset {name!r} is outside pool {pool!r}: names must start with '{pool}/'"]
    if pool_of(name) not in pools:
        return [
            f"pool {pool_of(name)!r} of dataset {name!r} does not exist on this host"
            f" (pools: {', '.join(pools) or 'none'}); create or import it first"
            " (zpool create / zpool import)"
        ]
    return []


def _present_below_absent(requests):
    """The requests for a dataset present below one requested absent, as problems."""
    errors = []
    absent = [r["name"] for r in requests if r["state"] == "absent"]
    for req in requests:
        if req["state"] != "present":
            continue
        for other in absent:
            if other != req["name"] and is_within(req["name"], other):
                errors.append(
                    f"dataset {req['name']!r} is requested present below {other!r} which is requested absent"
                )
    return errors


def _reference_properties(state, name):
    """A dataset whose property list tells which native properties exist and are settable."""
    for candidate in (name, pool_of(name)):
        entry = state.get(candidate)
        if entry is not None and entry["type"] in ("filesystem", "volume"):
            return entry
    return None


def plan(requests, state, pools, pool=None, origins=None, *, dialect=DIALECT_OPENZFS):
    """Validate and compute one action per request.

    Each action: ``{"name", "state", "action": created|updated|destroyed|unchanged,
    "recursive", "properties" (desired, normalised), "changed_properties": {p: {before, after}},
    "destroys": [...], "parents": [...]}``; ``parents`` are the missing ancestors a created
    dataset brings with it (``state`` must know which ancestors exist, see ZfsState.add_existing).
    Property values are checked with ``dialect``'s rules. Raises ZfsValidationError before
    anything changes.
    """
    validate_requests(requests, pools, pool, dialect)
    absent_names = set(r["name"] for r in requests if r["state"] == "absent")
    errors = []
    actions = []
    for req in requests:
        name = req["name"]
        entry = state.get(name)
        action = {
            "name": name,
            "state": req["state"],
            "recursive": req["recursive"],
            "properties": {},
            "changed_properties": {},
            "destroys": [],
            "parents": [],
        }
        if req["state"] == "present":
            reference = _reference_properties(state, name)
            errors.extend(_plan_present(action, req["properties"], entry, reference, dialect))
        elif entry is None:
            action["action"] = "unchanged"
        else:
            problem = _plan_destroy(action, state, origins, absent_names)
            if problem:
                errors.append(problem)
                continue
        actions.append(action)
    if errors:
        raise ZfsValidationError(
            "invalid datasets request, nothing was changed: " + "; ".join(errors), errors=errors
        )
    _assign_parents(actions, state)
    return actions


def read_answers_plan(requests, state):
    """Whether ``state``, read with only the requested properties, lets plan judge every request
    as a read of all properties would: each native property a request names is in its reference
    dataset's answer and settable there (else the read of all says why it is refused)."""
    for req in requests:
        reference = _reference_properties(state, req["name"]) if req["state"] == "present" else None
        if reference is None:
            continue
        for prop in req["properties"]:
            ref = reference["properties"].get(prop)
            if ":" in prop or prop in CREATE_ONLY_PROPERTIES or prop in SETTABLE_WITHOUT_SOURCE:
                continue
            if ref is None or ref["source"] == "-":
                return False
    return True


# What tells whether an existing filesystem should be mounted and is not (_unmounted).
MOUNT_PROPERTIES = ("mounted", "canmount", "mountpoint")


def _unmounted(entry, properties):
    """An existing filesystem that zfs create or boot (zfs mount -a) would have mounted - canmount on,
    a path as mountpoint (as requested, or as it is) - and that is not mounted: a create killed
    between its create and its mount leaves one, and so does an unmount by hand."""
    props = entry["properties"] if entry else {}
    if entry is None or entry.get("type") != "filesystem" or "mounted" not in props:
        return False
    canmount = properties.get("canmount", (props.get("canmount") or {}).get("value"))
    mountpoint = properties.get("mountpoint", (props.get("mountpoint") or {}).get("value"))
    return props["mounted"]["value"] == "no" and canmount == "on" and str(mountpoint or "").startswith("/")


def _plan_present(action, properties, entry, reference, dialect):
    """Fill in the action of a request for a present dataset (its properties, what changes, and
    whether it is created, updated or unchanged); the problems found."""
    name = action["name"]
    errors = []
    for prop, raw in sorted(properties.items()):
        desired = normalize_value(prop, raw)
        action["properties"][prop] = desired
        current = entry["properties"].get(prop) if entry else None
        problem = _property_problem(name, prop, raw, reference, dialect)
        if problem:
            errors.append(problem)
            continue
        if entry is None:
            action["changed_properties"][prop] = {"before": None, "after": desired}
            continue
        if _already_set(prop, current, desired):
            continue
        if prop in CREATE_ONLY_PROPERTIES:
            value = current["value"] if current else None
            errors.append(
                f"dataset {name!r}: property {prop!r} can only be set when the dataset is created"
                f" (it is {value!r}); recreate the dataset or drop the property"
            )
            continue
        action["changed_properties"][prop] = {
            "before": current["value"] if current else None,
            "before_source": current["source"] if current else None,
            "after": desired,
        }
    if _unmounted(entry, properties):
        action["changed_properties"]["mounted"] = {"before": "no", "after": "yes"}
    if entry is None:
        action["action"] = "created"
    elif action["changed_properties"]:
        action["action"] = "updated"
    else:
        action["action"] = "unchanged"
    return errors


def _property_problem(name, prop, raw, reference, dialect):
    """Why this ZFS refuses ``prop`` or its value ``raw`` on dataset ``name`` (None when it takes them).

    A native property must be in ``reference``'s property list and not read-only there."""
    native = ":" not in prop and "@" not in prop
    if native and reference is not None:
        ref = reference["properties"].get(prop)
        if ref is None:
            return (
                f"dataset {name!r}: property {prop!r} is not supported by this ZFS"
                f" (it is not in 'zfs get all' of {reference['name']})"
            )
        if (
            ref["source"] == "-"
            and prop not in CREATE_ONLY_PROPERTIES
            and prop not in SETTABLE_WITHOUT_SOURCE
        ):
            return f"dataset {name!r}: property {prop!r} is read-only on this ZFS; remove it"
    problem = value_problem(prop, raw, dialect)
    if problem:
        return f"dataset {name!r}: {prop}={_shown(raw)} is refused by this ZFS ({dialect}): {problem}"
    return None


def _already_set(prop, current, desired):
    """The dataset has ``desired`` set already: locally, received, or as a create-only property's value."""
    return (
        current is not None
        and current["value"] == desired
        and (
            source_kind(current["source"]) in ("local", "received")
            or (prop in CREATE_ONLY_PROPERTIES and current["source"] == "-")
        )
    )


def _plan_destroy(action, state, origins, absent_names):
    """Fill in what destroying an existing dataset destroys; why it is refused (None when it is not).

    Without recursive, a dataset with children or snapshots is refused; with it, one whose
    snapshots have clones outside it."""
    name = action["name"]
    children = [c for c in state.children(name) if c not in absent_names]
    snapshots = state.snapshots(name)
    if not action["recursive"] and (children or snapshots):
        below = " and ".join(
            part
            for part in (
                children and f"children ({', '.join(children)})",
                snapshots and f"snapshots ({', '.join(snapshots)})",
            )
            if part
        )
        return (
            f"dataset {name!r} has {below}; set recursive: true to destroy it with everything below"
            " it (zfs destroy -r)"
        )
    if action["recursive"] and origins is not None:
        outside = sorted(
            clone
            for clone, origin in origins.items()
            if origin not in ("-", "") and is_within(origin, name) and not is_within(clone, name)
        )
        if outside:
            return (
                f"dataset {name!r} has snapshots with clones outside it ({', '.join(outside)});"
                " zfs destroy -R would destroy them too, which is never done here: promote or"
                " destroy those clones first"
            )
        action["destroys"] = sorted(n for n in origins if is_within(n, name))
    else:
        action["destroys"] = [name]
    action["action"] = "destroyed"
    return None


def ancestors(name):
    """The datasets between the pool root and ``name``, shallowest first (both excluded)."""
    parts = name.split("/")
    return ["/".join(parts[:depth]) for depth in range(2, len(parts))]


def _apply_order(actions):
    """Destroys deepest first, then creates and updates shallowest first."""
    destroys = sorted((a for a in actions if a["action"] == "destroyed"), key=lambda a: -a["name"].count("/"))
    writes = sorted(
        (a for a in actions if a["action"] in ("created", "updated")), key=lambda a: a["name"].count("/")
    )
    return destroys + writes


def _assign_parents(actions, state):
    """Give each created dataset the missing ancestors it creates first (as ``zfs create -p``
    would), in apply order, so that each missing ancestor is created exactly once."""
    requested = set(a["name"] for a in actions if a["state"] == "present")
    claimed = set()
    for action in _apply_order(actions):
        if action["action"] != "created":
            continue
        action["parents"] = [
            anc
            for anc in ancestors(action["name"])
            if not state.exists(anc) and anc not in requested | claimed
        ]
        claimed.update(action["parents"])


def action_diff(action, state):
    """Ansible diff (before/after) for one action."""
    name = action["name"]
    entry = state.get(name)
    before = {"state": "present" if entry else "absent"}
    after = {"state": action["state"]}
    if action["state"] == "present":
        props = sorted(action["properties"])
        if entry:
            before["properties"] = dict((p, (entry["properties"].get(p) or {}).get("value")) for p in props)
        after["properties"] = dict((p, action["properties"][p]) for p in props)
    elif action["destroys"]:
        before["destroys"] = action["destroys"]
    return {"before_header": name, "after_header": name, "before": before, "after": after}
