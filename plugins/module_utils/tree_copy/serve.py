# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tree served over HTTP for the length of one copy into a pod's volume (data_serve).

The benchmark operators' lesson: into a Kubernetes volume, NFS writes hung in D-state, ``kubectl
cp`` needs tar in the image, a stdin pipe through ``kubectl exec`` timed out after ~30 s; what
worked was a plain HTTP server on the source host and ``curl`` in the pod. Here the server only
answers under a random token, serves byte ranges (``curl -C -`` resumes), and hands the pod one
shell script (``pull.sh``) made from the tree: every name is quoted here, so the pod needs only
``sh``, ``curl`` and coreutils or busybox. The pod puts back what it holds afterwards (sizes,
SHA-256 of every file, link targets, every name under the volume), which becomes a manifest of
the copy in tree_manifest's format, compared with the source's.
"""

import hmac
import http.server
import json
import os
import re
import shlex
import socketserver

from ansible_collections.strata.ops.plugins.module_utils import tree_manifest
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import plan as planning

BLOCK = 1 << 20
# Where the pod writes a file until it is complete (resumed by curl -C - on the next pod).
PART_SUFFIX = ".strata-part"


def catalog(root):
    """(files, others, errors): ``files`` [(id, path, entry)] of regular files, ``others`` the
    directories and symlinks [(path, entry, target)], from plan.scan."""
    entries, errors = planning.scan(root)
    files, others = [], []
    for path in sorted(entries):
        entry = entries[path]
        if entry["kind"] == "file":
            files.append((len(files), path, entry))
        elif entry["kind"] == "dir":
            others.append((path, entry, None))
        elif entry["kind"] == "link":
            try:
                others.append((path, entry, os.readlink(os.path.join(root, path))))
            except OSError as exc:
                errors[path] = exc.strerror or str(exc)
    return files, others, errors


def pull_script(files, others):
    """The POSIX sh the pod runs as ``sh pull.sh BASE_URL TARGET``: directories, then every file
    not yet complete (a partial one resumed), hard links, symlinks, modes and times; then the
    report of what the target holds, PUT back to the server."""

    def q(path):
        # "./" first: a name starting with "-" is never an option (touch, stat and mv read "-"
        # as stdin or stdout even after "--").
        return shlex.quote("./" + path)

    lines = [
        "#!/bin/sh",
        "# Made by strata.ops.data_serve for one copy; run as: sh pull.sh BASE_URL TARGET",
        "set -eu",
        'B=$1; cd "$2"',
        f"P={PART_SUFFIX}",
        # get ID SIZE MTIME PATH: skip when its size and mtime are the source's (rsync's quick check),
        # else fetch (resuming a partial file) and move into place.
        'get() { if [ -f "$4" ] && [ ! -L "$4" ] && [ "$(wc -c < "$4")" -eq "$2" ] \\',
        '    && [ "$(stat -c %Y "$4")" -eq "$3" ]; then return 0; fi',
        '  if [ "$2" -eq 0 ]; then rm -f "$4"; : > "$4"; return 0; fi',
        '  if [ -f "$4$P" ] && [ "$(wc -c < "$4$P")" -gt "$2" ]; then rm -f "$4$P"; fi',
        '  if [ ! -f "$4$P" ] || [ "$(wc -c < "$4$P")" -lt "$2" ]; then',
        '    curl -fsS --retry 5 -C - -o "$4$P" "$B/f/$1"; fi',
        '  mv -f "$4$P" "$4"; }',
        # A directory where a symlink is: the link goes first, so nothing is written through it.
        'dir() { if [ -L "$1" ]; then rm -f "$1"; fi; mkdir -p "$1"; }',
    ]
    dirs = [(path, entry) for path, entry, target in others if target is None]
    for path, _entry in dirs:
        lines.append(f"dir {q(path)}")
    first_of_inode = {}
    for file_id, path, entry in files:
        if entry["nlink"] > 1 and entry["inode"] in first_of_inode:
            lines.append(f"ln -f {q(first_of_inode[entry['inode']])} {q(path)}")
            continue
        first_of_inode.setdefault(entry["inode"], path)
        lines.append(f"get {file_id} {entry['size']} {entry['mtime_ns'] // 10**9} {q(path)}")
        lines.append(f"chmod {entry['mode']:o} {q(path)}; touch -d @{entry['mtime_ns'] // 10**9} {q(path)}")
    for path, _entry, target in others:
        if target is not None:
            lines.append(f"ln -sfn -- {shlex.quote(target)} {q(path)}")
    for path, entry in reversed(dirs):  # deepest first: a child's files no longer change its times
        lines.append(f"chmod {entry['mode']:o} {q(path)}; touch -d @{entry['mtime_ns'] // 10**9} {q(path)}")
    # The report: "ID SIZE SHA256" per file, "L INDEX TARGET" per link and "D INDEX" per directory
    # (a real one, not a link to one), one per line; then every name under the target, NUL-separated.
    lines.append("R=$(mktemp)")
    for file_id, path, _entry in files:
        lines.append(
            f'if [ -f {q(path)} ] && [ ! -L {q(path)} ]; then printf "%s %s %s\\n" {file_id} '
            f'"$(wc -c < {q(path)})" "$(sha256sum < {q(path)} | cut -d" " -f1)" >> "$R"; fi'
        )
    for index, (path, _entry, target) in enumerate(others):
        if target is not None:
            lines.append(
                f'if [ -L {q(path)} ]; then printf "L %s %s\\n" {index} "$(readlink {q(path)})" >> "$R"; fi'
            )
        else:
            lines.append(
                f'if [ -d {q(path)} ] && [ ! -L {q(path)} ]; then printf "D %s\\n" {index} >> "$R"; fi'
            )
    # -H 'Expect:': curl asks an HTTP/1.0 server for 100-continue and waits a second for it.
    lines.append('curl -fsS --retry 5 -H "Expect:" -T "$R" "$B/report"')
    lines.append(
        'find . -mindepth 1 -print0 > "$R"; curl -fsS --retry 5 -H "Expect:" -T "$R" "$B/names"; rm -f "$R"'
    )
    lines.append('echo "strata.ops.data_serve: pulled and reported"')
    return "\n".join(lines) + "\n"


def _number(text):
    """A non-negative decimal number, or None (str.isdigit also takes "²")."""
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


def copy_manifest(files, others, report, names):
    """The copy's manifest (tree_manifest's format, sha256) from the pod's report and names. A name
    the report does not type (an extra, a partial file, a link where a directory belongs) is
    "other", so it compares as extra or differing."""
    by_id = {file_id: path for file_id, path, _entry in files}
    entries = {}
    for line in report.decode("utf-8", "surrogateescape").split("\n"):
        fields = line.split(" ", 2)
        index = _number(fields[1]) if len(fields) > 1 else None
        if fields[0] == "L" and len(fields) == 3 and index is not None and index < len(others):
            entries[others[index][0]] = {"type": "link", "target": fields[2]}
        elif fields[0] == "D" and len(fields) == 2 and index is not None and index < len(others):
            entries[others[index][0]] = {"type": "dir"}
        elif len(fields) == 3 and _number(fields[0]) in by_id:
            # A size the pod could not read (-1) differs from every real one.
            size = index if index is not None else -1
            entries[by_id[_number(fields[0])]] = {"type": "file", "size": size, "hash": fields[2]}
    for raw in names.split(b"\0"):
        name = raw.decode("utf-8", "surrogateescape")
        name = name[2:] if name.startswith("./") else name
        if name and name not in entries:
            entries[name] = {"type": "other"}
    return {
        "format": tree_manifest.FORMAT,
        "algorithm": "sha256",
        "entries": dict(sorted(entries.items())),
        "unreadable": {},
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "strata-data-serve"

    def log_message(self, format, *args):  # BaseHTTPRequestHandler's own signature
        self.server.log.write(f"{self.address_string()} {format % args}\n".encode())
        self.server.log.flush()

    def _route(self):
        prefix = f"/{self.server.token}/"
        if not hmac.compare_digest(self.path[: len(prefix)].encode(), prefix.encode()):
            self.send_error(404)
            return None
        return self.path[len(prefix) :]

    def do_GET(self):  # BaseHTTPRequestHandler dispatches by this name
        route = self._route()
        if route is None:
            return
        file_id = _number(route[2:]) if route.startswith("f/") else None
        if route == "pull.sh":
            self._send_bytes(self.server.script)
        elif file_id is not None and file_id < len(self.server.files):
            self._send_file(self.server.files[file_id])
        else:
            self.send_error(404)

    def do_PUT(self):
        route = self._route()
        if route not in ("report", "names"):
            if route is not None:
                self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        tmp = os.path.join(self.server.state_dir, f".{route}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, os.path.join(self.server.state_dir, route))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_bytes(self, data):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_file(self, item):
        _file_id, path, _entry = item
        try:
            handle = _open(os.path.join(self.server.root, path))
        except OSError:
            self.send_error(403)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end = _range(self.headers.get("Range"), size)
            if start is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            partial = (start, end) != (0, size - 1)
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(max(0, end - start + 1)))
            self.end_headers()
            handle.seek(start)
            left = end - start + 1
            while left > 0:
                data = handle.read(min(BLOCK, left))
                if not data:
                    break
                self.wfile.write(data)
                left -= len(data)


def _open(path):
    return open(path, "rb")


def _range(header, size):
    """(first, last) byte of a ``Range: bytes=first-[last]`` request (RFC 9110, 14.1.2), the
    whole file without one, or (None, None) when it cannot be satisfied."""
    if not header:
        return 0, size - 1
    unit, _equals, spec = header.partition("=")
    first, _dash, last = spec.partition("-")
    start, stop = _number(first.strip()), _number(last.strip())
    if unit.strip() != "bytes" or "," in spec or start is None:
        return 0, size - 1  # not a range this server serves: the whole file (RFC 9110 allows it)
    end = min(stop, size - 1) if stop is not None else size - 1
    if start >= size or start > end:
        return None, None
    return start, end


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, address, root, token, state_dir, files, others):  # noqa: PLR0917
        super().__init__(address, _Handler)  # binds first: a wrong address leaves nothing behind
        self.root, self.token, self.state_dir, self.files = root, token, state_dir, files
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.script = pull_script(files, others).encode("utf-8", "surrogateescape")
        self.log = open(os.path.join(state_dir, "access.log"), "ab")  # noqa: SIM115 - open while it serves

    def server_close(self):
        super().server_close()
        if hasattr(self, "log"):  # not when binding failed (HTTPServer closes itself then)
            self.log.close()


def state_file(state_dir):
    return os.path.join(state_dir, "server.json")


def read_state(state_dir):
    try:
        with open(state_file(state_dir)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
