# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What to send and which stream sends it (pure, apart from ``scan``).

Balancing is greedy longest-first (each item, largest first, to the stream with the fewest bytes),
what fpart does for fpsync. Not fpart itself: it would have to be installed on every source host,
it cannot keep hard-link groups in one part, and it cannot cut one file into ranges, which is what
lets a few multi-GiB files use every stream instead of one.
"""

import hashlib
import heapq
import os
import re
import stat

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument

# Where ranges of large files are written at the destination before they are complete: one
# ``<key>.part`` per file and one marker per range (``<key>.<offset>``: the bytes written).
WORK_DIR = ".strata-transfer"
# The cost of one file in bytes-equivalent (a file-list entry, an open and close at each side):
# thousands of small files must not all land in one stream because they weigh nothing.
PER_FILE_COST = 16 * 1024
# rsync's itemized change line (--out-format='%i %n'): 11 flag characters, a space, the name.
# Defined in rsync(1) under --itemize-changes; names with control characters come escaped as
# \#ooo (octal), even with -8 (--8-bit-output), which keeps other bytes as they are.
_ITEMIZE_FLAGS = 11
_ESCAPE = re.compile(rb"\\#([0-7]{3})")


def scan(root):
    """(entries, errors) of the tree under ``root``: path relative to root -> entry, never following links.

    An entry: ``kind`` (file, link, dir, other), ``size``, ``mtime_ns``, ``mode``, ``inode``
    (``dev:ino``), ``nlink``, ``sparse`` (fewer blocks than its size needs).
    """
    if not os.path.isdir(root):
        raise InvalidArgument(
            f"source path {root} does not exist or is not a directory on this host: check src_path "
            "(a tree is copied; for one file give its directory)"
        )
    entries, errors = {}, {}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir)) as listing:
                children = list(listing)
        except OSError as exc:
            errors[rel_dir or "."] = exc.strerror or str(exc)
            continue
        for child in children:
            rel = os.path.join(rel_dir, child.name) if rel_dir else child.name
            try:
                info = child.stat(follow_symlinks=False)
            except OSError as exc:
                errors[rel] = exc.strerror or str(exc)
                continue
            entries[rel] = _entry(info)
            if stat.S_ISDIR(info.st_mode):
                pending.append(rel)
    return entries, errors


def _entry(info):
    mode = info.st_mode
    kind = (
        "file"
        if stat.S_ISREG(mode)
        else "link"
        if stat.S_ISLNK(mode)
        else "dir"
        if stat.S_ISDIR(mode)
        else "other"
    )
    return {
        "kind": kind,
        "size": info.st_size if kind == "file" else 0,
        "mtime_ns": info.st_mtime_ns,
        "mode": stat.S_IMODE(mode),
        "inode": f"{info.st_dev}:{info.st_ino}",
        "nlink": info.st_nlink,
        "sparse": kind == "file" and info.st_blocks * 512 + 4096 < info.st_size,
    }


def data_extents(path, size):
    """[[start, length], ...] of the data in a sparse file (lseek SEEK_DATA/SEEK_HOLE, lseek(2));
    the whole file where the file system does not report holes."""
    extents = []
    with open(path, "rb") as handle:
        fd, position = handle.fileno(), 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole from here to the end
                break
            if start >= size:  # data past the size scanned: the file grew since
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append([start, end - start])
            position = end
    return extents


def clip(extents, offset, length):
    """The parts of ``extents`` within [offset, offset + length)."""
    clipped = []
    for start, size in extents:
        low, high = max(start, offset), min(start + size, offset + length)
        if low < high:
            clipped.append([low, high - low])
    return clipped


def decode_name(raw):
    """A name as rsync printed it (bytes, \\#ooo escapes) -> str (surrogateescape for non-UTF-8)."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw).decode("utf-8", "surrogateescape")


def parse_itemized(output):
    """rsync -n -i output (bytes) -> {"send", "dirs", "delete", "conflicts", "links"} as lists of paths.

    ``send``: regular files rsync would write (new, or differing by rsync's quick check);
    ``conflicts``: those of them that already exist at the destination (``>f`` without ``+++``),
    which a copy would overwrite; ``links``: symlinks, hard links and special files to create or
    change; ``dirs``: directories to create or whose attributes differ; ``attrs``: files and links
    whose contents are the same but not their mode, owner or times (``.f...p.....``); ``delete``:
    what ``--delete`` would remove.
    """
    result = {"send": [], "dirs": [], "attrs": [], "delete": [], "conflicts": [], "links": []}
    for line in output.split(b"\n"):
        if len(line) <= _ITEMIZE_FLAGS + 1 or line[_ITEMIZE_FLAGS : _ITEMIZE_FLAGS + 1] != b" ":
            continue
        flags, name = (
            line[:_ITEMIZE_FLAGS].decode("ascii", "replace"),
            decode_name(line[_ITEMIZE_FLAGS + 1 :]),
        )
        if flags.startswith("*deleting"):
            result["delete"].append(name.rstrip("/"))
        elif flags[1] == "d":
            result["dirs"].append(name.rstrip("/") or ".")
        elif flags[1] == "f" and flags[0] in "<>":
            result["send"].append(name)
            if not flags[2:].startswith("+++"):
                result["conflicts"].append(name)
        elif (flags[1] == "f" and flags[0] == "h") or (flags[1] in "LDS" and flags[0] in "ch"):
            result["links"].append(name)
        elif flags[0] == "." and flags[1] in "fLDS" and flags[2:].strip(". "):
            result["attrs"].append(name)
    return result


def range_key(path, entry):
    """The name of a large file's work at the destination; another size or mtime is another file."""
    return hashlib.sha1(
        f"{path}\0{entry['size']}\0{entry['mtime_ns']}".encode("utf-8", "surrogateescape")
    ).hexdigest()[:20]


def is_large(entry, large_min):
    """Sent in ranges rather than by rsync: a regular file without hard links, of large_min or more
    (a sparse file too: only its data is sent, its holes stay holes)."""
    return entry["kind"] == "file" and entry["nlink"] == 1 and entry["size"] >= large_min


def _items(entries, paths):
    """Whole-file items for ``paths``, (weight, [paths]). A hard-linked file comes with every name
    of its inode in the tree, listed or not: rsync -H links only names sent in the same run, so a
    new name of a file the destination already has needs that file in its --files-from too. A path
    the scan did not see (made since) goes as it is: rsync sends what it finds."""
    linked = {}
    for path, entry in entries.items():
        if entry["kind"] == "file" and entry["nlink"] > 1:
            linked.setdefault(entry["inode"], []).append(path)
    groups, items = {}, []
    for path in paths:
        entry = entries.get(path)
        if entry is None:
            items.append((PER_FILE_COST, [path]))
        elif entry["kind"] == "file" and entry["nlink"] > 1:
            groups[entry["inode"]] = linked[entry["inode"]]
        else:
            items.append((entry["size"] + PER_FILE_COST, [path]))
    for inode_paths in groups.values():
        items.append(
            (entries[inode_paths[0]]["size"] + PER_FILE_COST * len(inode_paths), sorted(inode_paths))
        )
    return items


def _spread(items, count):
    """Longest first into ``count`` bins: [(load, [item, ...]), ...]; ties broken by the items' order."""
    heap = [(0, index) for index in range(count)]
    bins = [[] for _index in range(count)]
    loads = [0] * count
    for item in sorted(items, key=lambda item: (-item[0], item[1])):
        load, index = heapq.heappop(heap)
        bins[index].append(item)
        loads[index] = load + item[0]
        heapq.heappush(heap, (loads[index], index))
    return loads, bins


def select_part(entries, index, count):
    """The paths that part ``index`` of ``count`` sends (hosts of a side that share one file system).

    Computed from the whole tree, not from what is left to send, so every host gets the same answer
    whatever the others already sent. Directories and links go with part 0.
    """
    if not 0 <= index < count:
        raise InvalidArgument(f"part index must be in 0..{count - 1}, got {index}")
    files = [path for path, entry in entries.items() if entry["kind"] == "file"]
    _loads, bins = _spread(_items(entries, files), count)
    chosen = {path for _weight, paths in bins[index] for path in paths}
    if index == 0:
        chosen.update(path for path, entry in entries.items() if entry["kind"] != "file")
    return chosen


def make_plan(entries, needed, *, streams, chunk_size, large_min, ranges_done, extents=None):
    """Streams balanced by bytes still to send.

    ``needed``: parse_itemized's result (what rsync would change); ``ranges_done``: key -> offset ->
    data bytes already written at the destination; ``extents``: path -> data extents of the sparse
    large files (data_extents; a file not in it is all data). Returns ``{"streams": [{"index",
    "files", "ranges", "files_bytes", "bytes"}], "large": {path: {"key", "size", "mtime_ns", "mode",
    "ranges"}}, "attributes": [...], "bytes", "files"}``. Every range of a large file is in the plan,
    the finished ones too (nothing to send: they count towards moving the file into place);
    ``attributes`` are the directories, large files and unchanged files with other attributes, that
    rsync sets at the end.
    """
    if streams < 1:
        raise InvalidArgument(f"streams must be 1 or more, got {streams}")
    if chunk_size < 1 << 20:
        raise InvalidArgument(f"chunk_size must be at least 1 MiB, got {chunk_size} bytes")
    extents = extents or {}
    large, whole, items = {}, [], []
    for path in needed["send"]:
        entry = entries.get(path)
        if entry is not None and is_large(entry, large_min):
            key = range_key(path, entry)
            done_by_offset = ranges_done.get(key, {})
            data = extents.get(path, [[0, entry["size"]]])
            large[path] = {
                "key": key,
                "size": entry["size"],
                "mtime_ns": entry["mtime_ns"],
                "mode": entry["mode"],
                "ranges": 0,
            }
            for offset in range(0, entry["size"], chunk_size):
                length = min(chunk_size, entry["size"] - offset)
                segments = clip(data, offset, length)
                total = sum(size for _start, size in segments)
                done = min(done_by_offset.get(str(offset), 0), total)
                large[path]["ranges"] += 1
                items.append(
                    (
                        total - done,
                        [
                            {
                                "path": path,
                                "key": key,
                                "offset": offset,
                                "length": length,
                                "segments": segments,
                                "bytes": total,
                                "done": done,
                            }
                        ],
                    )
                )
        else:
            whole.append(path)
    whole.extend(needed["links"])
    items.extend(_items(entries, whole))
    _loads, bins = _spread([(weight, _Sortable(members)) for weight, members in items], streams)
    plan_streams = []
    for index, members in enumerate(bins):
        files, ranges = [], []
        for _weight, sortable in members:
            for member in sortable.members:
                (ranges if isinstance(member, dict) else files).append(member)
        ranges.sort(key=lambda r: (r["path"], r["offset"]))
        files_bytes = _bytes(entries, files)
        plan_streams.append(
            {
                "index": index,
                "files": sorted(files),
                "ranges": ranges,
                "files_bytes": files_bytes,
                "bytes": files_bytes + sum(r["bytes"] - r["done"] for r in ranges),
            }
        )
    return {
        "streams": [s for s in plan_streams if s["files"] or s["ranges"]],
        "large": large,
        "attributes": sorted(needed["dirs"]) + sorted(large) + sorted(needed.get("attrs", [])),
        "bytes": sum(s["bytes"] for s in plan_streams),
        "files": len(needed["send"]) + len(needed["links"]),
    }


def _bytes(entries, paths):
    """The bytes of ``paths``, each hard-linked file once."""
    inodes = {}
    for path in paths:
        entry = entries.get(path)
        if entry is not None and entry["kind"] == "file":
            inodes[entry["inode"]] = entry["size"]
    return sum(inodes.values())


class _Sortable:
    """Members of one item, ordered by their first path (ranges by path and offset)."""

    def __init__(self, members):
        self.members = members
        first = members[0]
        self.order = (first["path"], first["offset"]) if isinstance(first, dict) else (first, -1)

    def __lt__(self, other):
        return self.order < other.order
