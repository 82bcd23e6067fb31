# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage rows of a host in the health report: what layers 2 and 4 assert, read from a
storage_info result without failing.

An expectation (built by the health_check role from the layers' variables) is one of

    {layer: 2, check: dataset, path: /srv/kind, dataset: lab/DATA/srv/kind}
    {layer: 4, check: dataset, path: /srv/kind/solana, dataset: lab/DATA/srv/kind/solana}
    {layer: 4, check: tmpfs, path: /srv/kind/solana/ramdisk, size_bytes: 67108864}
    {layer: 4, check: fstab, path: /srv/kind/solana/ramdisk, requires: zfs-mount.service}

and becomes a row {layer, check, path, ok, found, expected, problem, fix}. ``problem`` (null when
ok) and ``fix`` are the words of the layer's own assert (roles/host_storage/tasks/assert.yml,
roles/workload_storage/tasks/assert.yml), so the page and a failing run say the same thing.
"""

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument

LAYER_PLAYBOOKS = {
    2: "playbooks/layer2_host_storage.yml",
    4: "playbooks/layer4_workload_storage.yml",
}
LAYER_TOPICS = {2: "cluster root dataset", 4: "workload datasets and ramdisk"}
CHECKS = ("dataset", "tmpfs", "fstab")


def fix_text(layer):
    return f"Layer {layer} fixes it: run {LAYER_PLAYBOOKS[layer]}."


def check_expectations(host, expect):
    """InvalidArgument unless ``expect`` is a list of the expectations above."""
    where = f"hosts[{host!r}].expect"
    if not isinstance(expect, list):
        raise InvalidArgument(f"{where} must be a list of expectations, got {expect!r}")
    for item in expect:
        if not isinstance(item, dict) or item.get("layer") not in LAYER_PLAYBOOKS:
            raise InvalidArgument(
                f"{where}: each entry needs layer 2 or 4, check ({', '.join(CHECKS)}) and path; got {item!r}"
            )
        if item.get("check") not in CHECKS or not item.get("path"):
            raise InvalidArgument(
                f"{where}: check must be one of {', '.join(CHECKS)} with a path; got {item!r}"
            )
        if item["check"] == "dataset" and not item.get("dataset"):
            raise InvalidArgument(f"{where}: check dataset needs the dataset expected at {item['path']}")


def human_bytes(size):
    """67108864 -> '64 MiB' (binary units, as tmpfs sizes are given)."""
    if size is None:
        return "?"
    size = int(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:g} {unit}" if unit == "B" else f"{size:.4g} {unit}"
        size /= 1024.0
    return str(size)


def found_text(fact):
    """What backs a path, in words, from one storage_info paths entry."""
    if not fact:
        return "not read"
    kind = fact.get("kind")
    if kind == "zfs":
        return f"ZFS dataset {fact.get('dataset')}"
    if kind == "tmpfs":
        where = "" if fact.get("mount_point") == fact.get("path") else f" at {fact.get('mount_point')}"
        return f"tmpfs of {human_bytes(fact.get('size_bytes'))}{where}"
    if kind == "directory":
        parent = fact.get("parent_mount") or {}
        on = parent.get("dataset") or parent.get("source") or parent.get("fstype")
        return f"plain directory on {parent.get('mount_point') or fact.get('mount_point')} ({on})"
    if kind == "missing":
        return "missing"
    return f"{fact.get('fstype') or kind} mount of {fact.get('source')}"


def _dataset_row(layer, path, want, fact):
    kind = fact.get("kind")
    dataset = fact.get("dataset") or ""
    ok = kind == "zfs" and dataset == want
    if ok:
        problem = None
    elif layer == 2:
        of = f" of dataset {dataset}" if dataset else ""
        problem = f"{path} is {kind}{of} but should be the mounted ZFS dataset {want}"
    else:
        problem = f"{path} is {kind}{(' ' + dataset) if dataset else ''}, should be the ZFS dataset {want}"
    return ok, f"the mounted ZFS dataset {want}", problem


def _tmpfs_row(path, want_bytes, fact):
    expected = f"a tmpfs of {human_bytes(want_bytes)} ({want_bytes} bytes)"
    if fact.get("kind") != "tmpfs" or fact.get("mount_point") != path:
        return False, expected, f"{path} is {fact.get('kind')}, should be a tmpfs"
    have = fact.get("size_bytes")
    if want_bytes is not None and int(have or -1) != int(want_bytes):
        return False, expected, f"{path} has {have} bytes, should have {want_bytes}"
    return True, expected, None


def _fstab_row(path, unit, fact):
    unit = unit or "zfs-mount.service"
    expected = f"an fstab line with x-systemd.requires={unit}"
    requires = ((fact.get("fstab") or {}).get("systemd") or {}).get("requires") or []
    if unit in requires:
        return True, expected, None
    return (
        False,
        expected,
        f"the fstab line of {path} lacks x-systemd.requires={unit} "
        "(the ramdisk would mount before its dataset at boot)",
    )


def fstab_found(fact):
    fstab = (fact or {}).get("fstab")
    if not fstab:
        return "no fstab line"
    return " ".join(
        str(x) for x in (fstab.get("source"), fstab.get("fstype"), ",".join(fstab.get("options") or []))
    )


def layer_row(want, paths):
    """One expectation against the storage_info ``paths`` of its host."""
    layer, check, path = want["layer"], want["check"], want["path"]
    fact = (paths or {}).get(path)
    row = {"layer": layer, "check": check, "path": path, "fix": fix_text(layer)}
    if fact is None:
        expected = {"dataset": f"the mounted ZFS dataset {want.get('dataset')}"}.get(check, check)
        return dict(
            row,
            ok=False,
            found="not read",
            expected=expected,
            problem=f"{path} was not read by storage_info on this host",
        )
    if check == "dataset":
        ok, expected, problem = _dataset_row(layer, path, want["dataset"], fact)
        found = found_text(fact)
    elif check == "tmpfs":
        ok, expected, problem = _tmpfs_row(path, want.get("size_bytes"), fact)
        found = found_text(fact)
    else:
        ok, expected, problem = _fstab_row(path, want.get("requires"), fact)
        found = fstab_found(fact)
    return dict(row, ok=ok, found=found, expected=expected, problem=problem)


def host_rows(entry):
    """The rows of one host entry {storage: storage_info result, expect: [...], rows: [...]}: given
    ``rows`` are taken as they are; a host without a storage result gets one red row."""
    if entry.get("rows") is not None:
        return list(entry["rows"])
    storage = entry.get("storage") or {}
    paths = storage.get("paths")
    if not isinstance(paths, dict) or storage.get("failed") or storage.get("skipped"):
        why = storage.get("msg") or "the host was unreachable or its play failed before the read"
        return [
            {
                "layer": 2,
                "check": "read",
                "path": None,
                "ok": False,
                "found": "no storage_info result",
                "expected": "a storage_info read of the layer 2 and 4 paths",
                "problem": f"no storage result from this host ({why})",
                "fix": "Run playbooks/health_check.yml again once the host answers "
                "(ansible -m ping names what is wrong).",
            }
        ]
    return [layer_row(want, paths) for want in entry.get("expect") or []]
