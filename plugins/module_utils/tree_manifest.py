# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hash manifest of a directory tree, made on the host that holds it, and the comparison of two.

Verifying a copy with ``rsync -c --dry-run`` reads every file on both sides through one ssh
stream; here each side hashes its own files in parallel (hashlib and xxhash release the GIL on
large buffers, so threads use every core and the disk is the limit) and only the manifests travel.
A kept manifest makes the next run re-hash only the files whose size or mtime changed.

Entries, by path relative to the root (``/`` separated, as os.walk gives them, never following a
symlink): ``{"type": "file", "size", "mtime_ns", "hash"}``, ``{"type": "link", "target"}``,
``{"type": "dir"}``; anything else (a socket, a device) is ``{"type": "other"}``. Unreadable files
are listed apart (``unreadable``) with the reason, so a permission problem is named, not hidden.
"""

import concurrent.futures
import hashlib
import json
import os
import stat

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError, utc_iso

FORMAT = "strata.ops.tree_manifest/1"
# Large reads with sequential readahead: a file is read once, front to back.
CHUNK = 4 << 20


def _blake2b():
    return hashlib.blake2b(digest_size=16)


def _optional(algorithm, package, factory_name):
    def factory():
        try:
            module = __import__(package)
        except ImportError:
            raise InvalidArgument(
                f"algorithm {algorithm}: the Python package {package} is not installed on this host "
                f"(pip install {package}, or Debian's python3-{package}); blake2b needs nothing"
            ) from None
        return getattr(module, factory_name)()

    return factory


# BLAKE2b-128 is in every Python; XXH3-128 and BLAKE3 are several times faster per core where their
# packages are installed. Both sides of a comparison must use the same one.
ALGORITHMS = {
    "blake2b": _blake2b,
    "xxh128": _optional("xxh128", "xxhash", "xxh3_128"),
    "blake3": _optional("blake3", "blake3", "blake3"),
    # What a pod with coreutils or busybox can compute itself (sha256sum): data_serve's copies.
    "sha256": hashlib.sha256,
}


class ManifestError(StrataError):
    """The tree cannot be read or the manifest cannot be written."""


def hasher(algorithm):
    """A new hash object of ``algorithm`` (checked first, so a missing package fails before work)."""
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return ALGORITHMS[algorithm]()


def hash_file(path, algorithm):
    digest = hasher(algorithm)
    with open(path, "rb", buffering=0) as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def scan(root):
    """(entries without hashes, unreadable) of the tree under ``root``; files carry size and mtime."""
    entries, unreadable = {}, {}

    def walk_error(exc):
        unreadable[os.path.relpath(exc.filename, root)] = exc.strerror or str(exc)

    for directory, dirs, files in os.walk(root, onerror=walk_error):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root)
            try:
                info = os.lstat(full)
            except OSError as exc:
                unreadable[rel] = exc.strerror or str(exc)
                continue
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = {"type": "link", "target": os.readlink(full)}
            elif stat.S_ISDIR(info.st_mode):
                entries[rel] = {"type": "dir"}
            elif stat.S_ISREG(info.st_mode):
                entries[rel] = {"type": "file", "size": info.st_size, "mtime_ns": info.st_mtime_ns}
            else:
                entries[rel] = {"type": "other"}
    return entries, unreadable


def load(path):
    """A kept manifest, or None when there is none (or it is not one of ours)."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def build(root, algorithm="blake2b", workers=4, previous=None):
    """The manifest of ``root``: entries hashed in ``workers`` threads; a file whose size and mtime
    are those ``previous`` (same root and algorithm) recorded keeps its hash."""
    if not os.path.isdir(root):
        raise InvalidArgument(f"path {root} is not a directory on this host: give the tree's root")
    hasher(algorithm)
    entries, unreadable = scan(root)
    reusable = {}
    if previous and previous.get("root") == root and previous.get("algorithm") == algorithm:
        reusable = previous.get("entries") or {}
    todo = []
    for rel, entry in entries.items():
        if entry["type"] != "file":
            continue
        before = reusable.get(rel) or {}
        if (
            before.get("size") == entry["size"]
            and before.get("mtime_ns") == entry["mtime_ns"]
            and before.get("hash")
        ):
            entry["hash"] = before["hash"]
        else:
            todo.append(rel)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(hash_file, os.path.join(root, rel), algorithm): rel for rel in todo}
        for future in concurrent.futures.as_completed(futures):
            rel = futures[future]
            try:
                entries[rel]["hash"] = future.result()
            except OSError as exc:
                unreadable[rel] = exc.strerror or str(exc)
                del entries[rel]
    hashed = [rel for rel in todo if rel in entries]
    files = [e for e in entries.values() if e["type"] == "file"]
    return {
        "format": FORMAT,
        "root": root,
        "algorithm": algorithm,
        "made": utc_iso(),
        "entries": dict(sorted(entries.items())),
        "unreadable": dict(sorted(unreadable.items())),
        "stats": {
            "files": len(files),
            "bytes": sum(e["size"] for e in files),
            "hashed": len(hashed),
            "hashed_bytes": sum(entries[rel]["size"] for rel in hashed),
            "reused": len(files) - len(hashed),
        },
    }


def same_tree(previous, manifest):
    """Whether ``previous`` (a kept manifest or None) records exactly what ``manifest`` found."""
    return bool(previous) and all(
        previous.get(key) == manifest[key] for key in ("root", "algorithm", "entries", "unreadable")
    )


def save(manifest, path):
    """Write ``manifest`` to ``path`` atomically, mode 0600."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, sort_keys=True, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise ManifestError(
            f"cannot write the manifest {path}: {exc.strerror or exc}; give another manifest_path"
        ) from None


def _same(source, dest):
    if source["type"] != dest["type"]:
        return False
    if source["type"] == "file":
        return source["size"] == dest["size"] and source.get("hash") == dest.get("hash")
    if source["type"] == "link":
        return source["target"] == dest["target"]
    return True


def compare(source, dest):
    """What ``dest`` lacks, holds besides, and holds differently from ``source`` (both manifests of
    one algorithm), and each side's unreadable files: a copy is complete when all are empty."""
    if source.get("algorithm") != dest.get("algorithm"):
        raise InvalidArgument(
            f"the manifests were made with {source.get('algorithm')} and {dest.get('algorithm')}: "
            "make both with the same algorithm"
        )
    theirs, ours = source.get("entries") or {}, dest.get("entries") or {}
    missing = sorted(rel for rel in theirs if rel not in ours)
    extra = sorted(rel for rel in ours if rel not in theirs)
    differing = []
    for rel in sorted(set(theirs) & set(ours)):
        if not _same(theirs[rel], ours[rel]):
            want, have = theirs[rel], ours[rel]
            if want["type"] != have["type"]:
                why = f"a {want['type']} at the source, a {have['type']} at the destination"
            elif want["type"] == "link":
                why = f"link to {want['target']!r} at the source, to {have['target']!r} at the destination"
            elif want["size"] != have["size"]:
                why = f"{want['size']} bytes at the source, {have['size']} at the destination"
            else:
                why = "same size, different content"
            differing.append({"path": rel, "why": why})
    problems = {
        "missing": missing,
        "extra": extra,
        "differing": differing,
        "unreadable_source": sorted(source.get("unreadable") or {}),
        "unreadable_dest": sorted(dest.get("unreadable") or {}),
    }
    problems["identical"] = not any(problems.values())
    return problems
