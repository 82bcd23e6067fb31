# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP for downloads: one connection, redirects, a Range probe, a speed test, small fetches."""

import http.client as httplib
import re
import threading
import time
from urllib.parse import urljoin, urlsplit

from ansible_collections.strata.ops.plugins.module_utils.transfer.errors import SourceError

MIB = 1024 * 1024

USER_AGENT = "strata.ops-transfer/1"


def _connect(url, timeout):
    """A connection for ``url``; SourceError for a URL no request can go to (a redirect may name one)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{url}: only http:// and https:// sources are supported")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port out of range
        raise SourceError(f"{url}: {exc}") from None
    if not host:
        raise SourceError(f"{url}: no host in the URL")
    cls = httplib.HTTPSConnection if parts.scheme == "https" else httplib.HTTPConnection
    return cls(host, port, timeout=timeout)


def _path(url):
    parts = urlsplit(url)
    return (parts.path or "/") + ("?" + parts.query if parts.query else "")


def request(url, method="GET", headers=None, timeout=10.0):
    """Send one request; return (connection, response). The caller closes the connection."""
    conn = _connect(url, timeout)
    hdrs = {"User-Agent": USER_AGENT}
    hdrs.update(headers or {})
    try:
        conn.request(method, _path(url), headers=hdrs)
        return conn, conn.getresponse()
    except (OSError, httplib.HTTPException) as exc:
        conn.close()
        raise SourceError(f"{url}: {method} request failed: {exc or exc.__class__.__name__}") from None


def resolve_redirect(url, timeout=10.0):
    """HEAD ``url`` without following; return the absolute Location of a 3xx answer.

    RPC nodes answer ``/snapshot.tar.bz2`` and ``/incremental-snapshot.tar.bz2`` this way
    (303 to ``/snapshot-<slot>-<hash>.tar.zst``). Raises SourceError for any other answer.
    """
    conn, resp = request(url, "HEAD", timeout=timeout)
    try:
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            return urljoin(url, location)
        raise SourceError(f"{url}: expected a redirect to a snapshot archive, got HTTP {resp.status}")
    finally:
        conn.close()


_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")


def probe(url, timeout=10.0, redirects=5):
    """Ask for byte 0 only: returns dict(url, length, ranges). Follows plain redirects."""
    for _hop in range(redirects + 1):
        conn, resp = request(url, "GET", {"Range": "bytes=0-0"}, timeout)
        try:
            location = resp.getheader("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            if resp.status == 206:
                match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
                if not match or match.group(3) == "*":
                    raise SourceError(f"{url}: 206 answer without a usable Content-Range")
                return dict(url=url, length=int(match.group(3)), ranges=True)
            if resp.status == 200:
                length = resp.getheader("Content-Length")
                if length is None or not length.isdigit():
                    raise SourceError(f"{url}: no Content-Length, cannot check the size")
                return dict(url=url, length=int(length), ranges=False)
            raise SourceError(f"{url}: HTTP {resp.status} {resp.reason}", status=resp.status)
        finally:
            conn.close()
    raise SourceError(f"{url}: more than {redirects} redirects")


def measure_speed(url, length, connections=1, seconds=2.0, timeout=10.0):
    """Read from ``connections`` ranged streams at spread offsets for ``seconds``; bytes/s.

    The rate a download would see from this source with that many connections.
    """
    counts = [0] * connections
    errors = []
    deadline = time.time() + seconds

    def reader(i):
        start = (length // connections) * i
        try:
            conn, resp = request(url, "GET", {"Range": f"bytes={start}-{length - 1}"}, timeout)
            try:
                if resp.status not in (200, 206):
                    errors.append(f"HTTP {resp.status}")
                    return
                while time.time() < deadline:
                    data = resp.read(64 * 1024)
                    if not data:
                        break
                    counts[i] += len(data)
            finally:
                conn.close()
        except (OSError, httplib.HTTPException, SourceError) as exc:
            errors.append(str(exc))

    started = time.time()
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(connections)]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(seconds + timeout)
    elapsed = max(time.time() - started, 1e-3)
    if errors and not sum(counts):
        raise SourceError(f"{url}: speed test failed: {errors[0]}")
    return sum(counts) / elapsed


def fetch_small(url, limit=4096, timeout=10.0):
    """GET a small text (a checksum file); None when the source has none (4xx)."""
    conn, resp = request(url, "GET", timeout=timeout)
    try:
        if resp.status >= 400:
            return None
        if resp.status != 200:
            raise SourceError(f"{url}: HTTP {resp.status}")
        return resp.read(limit).decode("utf-8", "replace")
    finally:
        conn.close()
