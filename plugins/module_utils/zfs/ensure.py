# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.zfs_dataset: read, plan, apply, and report exactly what was done."""

import threading

from ansible_collections.strata.ops.plugins.module_utils.zfs import ZfsCommandError, ZfsError
from ansible_collections.strata.ops.plugins.module_utils.zfs.backend import ZfsBackend, load_libzfs_core
from ansible_collections.strata.ops.plugins.module_utils.zfs.plan import (
    MOUNT_PROPERTIES,
    _apply_order,
    action_diff,
    ancestors,
    normalize_request,
    plan,
    read_answers_plan,
    validate_requests,
)
from ansible_collections.strata.ops.plugins.module_utils.zfs.properties import pool_of

# Writes in flight at once on the CLI path: each zfs command mostly waits on the ZFS daemon or
# kernel, so a few at a time create 200 datasets in about half a shell loop's time (zfs-fuse).
CLI_PARALLEL = 4

# zfs_dataset's options, which storage_info's zfs_plan takes too (one request shape, one planner).
DATASETS_OPTIONS = dict(
    datasets=dict(
        type="list",
        elements="dict",
        required=True,
        options=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            properties=dict(type="dict", default={}),
            recursive=dict(type="bool", default=False),
        ),
    ),
    pool=dict(type="str"),
)


def journal_details(journal):
    """Result keys that say what a run changed: ``changed``, ``done`` (one line per change, in
    order), ``created``, ``destroyed`` and ``properties_set`` ({dataset: {property: value}})."""
    details = {
        "changed": bool(journal),
        "done": [],
        "created": [],
        "destroyed": [],
        "mounted": [],
        "properties_set": {},
    }
    for entry in journal:
        name, props = entry["name"], entry["properties"]
        listed = ", ".join(f"{prop}={value}" for prop, value in sorted(props.items()))
        if entry["action"] == "set":
            details["done"].append(f"set {listed} on {name}")
        else:
            shown = f" ({listed})" if listed else ""
            details["done"].append(f"{entry['action']} {name}{shown}")
            details[entry["action"]].append(name)
        if props:
            details["properties_set"].setdefault(name, {}).update(props)
    return details


def _apply_one(backend, action):
    name = action["name"]
    if action["action"] == "destroyed":
        action["write_path"] = backend.destroy(name, action["recursive"], action["destroys"])
    elif action["action"] == "created":
        action["write_path"] = backend.create(name, action["properties"], action["parents"])
    else:
        changed = dict((p, action["properties"][p]) for p in action["changed_properties"] if p != "mounted")
        action["write_path"] = backend.set(name, changed)
        if "mounted" in action["changed_properties"]:
            backend.mount(name)


def _apply_parallel(backend, writes, parallel):
    """Creates and updates, ``parallel`` at a time; each starts once the actions creating its
    ancestors are done (they come first in apply order). After a failure nothing more starts,
    those running finish (and are journaled), and the first failure is raised."""
    created = ((i, a) for i, a in enumerate(writes) if a["action"] == "created")
    maker = dict((made, i) for i, a in created for made in [*a["parents"], a["name"]])
    done = [threading.Event() for _action in writes]
    slots = threading.Semaphore(parallel)
    failures = []

    def work(i):
        try:
            _apply_one(backend, writes[i])
        except BaseException as exc:  # any failure, raised again in the caller's thread below
            failures.append(exc)
        finally:
            done[i].set()
            slots.release()

    threads = []
    for i, action in enumerate(writes):
        for anc in ancestors(action["name"]):
            if maker.get(anc, i) != i:
                done[maker[anc]].wait()
        slots.acquire()
        if failures:
            slots.release()
            break
        thread = threading.Thread(target=work, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _apply(backend, actions):
    """Apply in _apply_order (writes ``backend.parallel`` at a time); on a failure, say exactly
    what was done before it."""
    try:
        order = _apply_order(actions)
        for action in (a for a in order if a["action"] == "destroyed"):  # deepest first, one at a time
            _apply_one(backend, action)
        writes = [a for a in order if a["action"] != "destroyed"]
        if backend.parallel > 1 and len(writes) > 1:
            _apply_parallel(backend, writes, backend.parallel)
        else:
            for action in writes:
                _apply_one(backend, action)
    except ZfsError as exc:
        details = journal_details(backend.journal)
        exc.details.update(details)
        exc.msg += (
            f" -- stopped part way; done before the failure: {'; '.join(details['done'])}."
            if details["done"]
            else " -- nothing was changed."
        )
        raise


def _read_state(backend, names, requests):
    """One ``zfs get`` pass of the requested properties; ``all`` instead when that pass cannot
    answer what planning checks (a property this ZFS refuses or reads back as read-only, a
    user quota), so plans and messages are those of a read of ``all``."""
    wanted = set(p for r in requests for p in r["properties"])
    if not any("@" in p for p in wanted):
        try:
            state = backend.read(names, properties=wanted | set(MOUNT_PROPERTIES))
        except ZfsCommandError:
            state = None
        if state is not None and read_answers_plan(requests, state):
            return state
    return backend.read(names)


def ensure_datasets(backend, items, pool=None, check_mode=False, want_diff=False):
    """Converge many datasets in one call. Returns the module result (without 'failed')."""
    requests = [normalize_request(item) for item in items]
    pools = backend.pools()
    validate_requests(requests, pools, pool)
    dialect = backend.dialect(pools[0] if pools else None)
    names = [r["name"] for r in requests] + sorted(set(pool_of(r["name"]) for r in requests))
    state = _read_state(backend, names, requests)
    # Which ancestors of datasets to be created exist: the plan creates the missing ones.
    unknown = set(
        anc
        for r in requests
        if r["state"] == "present" and not state.exists(r["name"])
        for anc in ancestors(r["name"])
        if not state.exists(anc)
    )
    if unknown:
        state.add_existing(backend.existing(unknown))
    origins = None
    if any(r["state"] == "absent" and r["recursive"] and state.exists(r["name"]) for r in requests):
        origins = backend.origins(set(pool_of(r["name"]) for r in requests))
    actions = plan(requests, state, pools, pool=pool, origins=origins, dialect=dialect)
    changed = any(a["action"] != "unchanged" for a in actions)
    if not check_mode:
        _apply(backend, actions)
    datasets = []
    for action in actions:
        item = {
            "name": action["name"],
            "state": action["state"],
            "action": action["action"],
            "changed_properties": action["changed_properties"],
        }
        if action["state"] == "present":
            item["properties"] = action["properties"]
        if action["action"] == "created":
            item["parents"] = action["parents"]
        if action["action"] == "destroyed":
            item["destroys"] = action["destroys"]
        if "write_path" in action:
            item["write_path"] = action["write_path"]
        datasets.append(item)
    result = {
        "changed": changed,
        "datasets": datasets,
        "write_path": backend.write_path,
        "dialect": dialect,
    }
    if backend.lzc_reason:
        result["write_path_reason"] = backend.lzc_reason
    if want_diff:
        result["diff"] = [action_diff(a, state) for a in actions if a["action"] != "unchanged"]
    return result


def _reads_only():
    return None, "a plan only reads (zfs get through the CLI)"


def plan_report(params, run_command, *, get_bin_path):
    """What zfs_dataset would do with ``params`` (pool, datasets), for a read-only module:
    ``{"converged": bool, "datasets": [...], "problem": str or None}``.

    ``converged`` is true only when the plan succeeded and changes nothing, so a role may skip
    zfs_dataset then. A request zfs_dataset would refuse is not raised here: ``problem`` says why,
    ``converged`` is false, and zfs_dataset (run because of it) fails with its own message.
    """
    try:
        result = run(params, True, False, run_command, get_bin_path=get_bin_path, load_lzc=_reads_only)
    except ZfsError as exc:
        return {"converged": False, "datasets": [], "problem": exc.msg}
    return {"converged": not result["changed"], "datasets": result["datasets"], "problem": None}


def run(params, check_mode, want_diff, run_command, *, get_bin_path, load_lzc=load_libzfs_core):
    """strata.ops.zfs_dataset: the result; a ZfsError carries the write path and the commands run."""
    zfs, zpool = get_bin_path("zfs"), get_bin_path("zpool")
    if not zfs or not zpool:
        raise ZfsError(
            "the zfs and zpool commands were not found on this host; install ZFS (OpenZFS or"
            " zfs-fuse, done by the base_system role) first"
        )
    lzc, lzc_reason = load_lzc()
    backend = ZfsBackend(run_command, zfs=zfs, zpool=zpool, lzc=lzc, lzc_reason=lzc_reason)
    if lzc is None:
        backend.parallel = CLI_PARALLEL
    try:
        return ensure_datasets(
            backend, params["datasets"], pool=params["pool"], check_mode=check_mode, want_diff=want_diff
        )
    except ZfsError as exc:
        exc.details.update(write_path=backend.write_path, commands=backend.commands)
        raise
