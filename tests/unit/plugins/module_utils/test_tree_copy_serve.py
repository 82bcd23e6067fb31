"""module_utils/tree_copy/serve: the byte ranges, the HTTP server under its token, the pod's report
turned into a manifest, and pull.sh run for real (``/bin/sh`` and ``curl`` against the server on
127.0.0.1) into an empty target, again, resumed from a partial file and verified against a target
changed behind its back.
"""

import hashlib
import http.client
import os
import re
import shutil
import socket
import stat
import subprocess
import threading

import pytest

from ansible_collections.strata.ops.plugins.module_utils import tree_manifest
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import serve

TOKEN = "0123456789abcdef0123456789abcdef"
NEEDS_SH_CURL = pytest.mark.skipif(
    not (os.path.exists("/bin/sh") and shutil.which("curl")), reason="needs /bin/sh and curl"
)


def _data(seed, size):
    """``size`` reproducible bytes that differ by ``seed``."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# ---------------------------------------------------------------------------------------------
# _range


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 100, (0, 99)),
        ("", 100, (0, 99)),
        ("bytes=0-", 100, (0, 99)),
        ("bytes=40-", 100, (40, 99)),
        ("bytes=99-", 100, (99, 99)),
        ("bytes=10-19", 100, (10, 19)),
        ("bytes=10-10", 100, (10, 10)),
        ("bytes=10-99", 100, (10, 99)),
        ("bytes=10-1000", 100, (10, 99)),  # a last byte beyond the file is clipped
        (" bytes = 5 - 7 ", 100, (5, 7)),  # spaces around the numbers
        ("bytes=100-", 100, (None, None)),  # starts at the size: unsatisfiable (416)
        ("bytes=500-600", 100, (None, None)),
        ("bytes=0-", 0, (None, None)),  # nothing of an empty file can be asked for
        ("bytes=5-3", 100, (None, None)),  # last < first: invalid, rejected (RFC 9110 14.2 allows)
        # Not a range this server serves: the whole file.
        ("bytes=-10", 100, (0, 99)),  # a suffix range
        ("bytes=0-1,5-9", 100, (0, 99)),  # several ranges
        ("bytes=1-2, 4-5", 100, (0, 99)),
        ("items=0-5", 100, (0, 99)),  # another unit
        ("bytes", 100, (0, 99)),
        ("bytes=", 100, (0, 99)),
        ("bytes=x-5", 100, (0, 99)),
        ("0-5", 100, (0, 99)),
        ("garbage", 100, (0, 99)),
        (None, 0, (0, -1)),  # an empty file without a range: nothing to send, 200
    ],
)
def test_range(header, size, want):
    assert serve._range(header, size) == want


def test_range_with_a_last_byte_that_is_not_a_number_reads_to_the_end():
    assert serve._range("bytes=10-x", 100) == (10, 99)


def test_range_with_a_superscript_digit_is_malformed_not_a_crash():
    assert serve._range("bytes=\u00b2-", 100) == (0, 99)


# ---------------------------------------------------------------------------------------------
# The server under its token


class Served:
    """A Server on 127.0.0.1 (port 0) serving ``root`` from a thread."""

    def __init__(self, root, state_dir, token=TOKEN):
        self.root, self.state_dir, self.token = str(root), str(state_dir), token
        self.files, self.others, self.errors = serve.catalog(self.root)
        self.server = serve.Server(
            ("127.0.0.1", 0), self.root, token, self.state_dir, self.files, self.others
        )
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/{token}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.server.log.close()  # Server opens its access log and server_close leaves it open
        self.thread.join(5)

    def file_id(self, path):
        return next(file_id for file_id, name, _entry in self.files if name == path)

    def request(self, method, path, headers=None, body=None):
        """(status, headers, body) of one request for ``path`` (the part after host:port)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def log(self):
        with open(os.path.join(self.state_dir, "access.log"), "rb") as handle:
            return handle.read().decode("utf-8", "surrogateescape")


@pytest.fixture
def serving(request):
    """serving(root, state_dir) -> a running Served, stopped when the test ends."""

    def start(root, state_dir, **kwargs):
        os.makedirs(state_dir, exist_ok=True)
        served = Served(root, state_dir, **kwargs)
        request.addfinalizer(served.close)
        return served

    return start


@pytest.fixture
def small(tmp_path, serving):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello, pod\n")
    (root / "big.bin").write_bytes(_data("big", 70_000))
    (root / "empty").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "secret name.txt").write_bytes(b"top secret")
    os.symlink("a.txt", root / "link")
    return serving(root, tmp_path / "state")


def test_catalog_numbers_the_files_in_path_order_and_keeps_dirs_and_links_apart(small):
    assert [(i, p) for i, p, _e in small.files] == [
        (0, "a.txt"),
        (1, "big.bin"),
        (2, "empty"),
        (3, "sub/secret name.txt"),
    ]
    assert [(p, t) for p, _e, t in small.others] == [("link", "a.txt"), ("sub", None)]
    assert small.errors == {}


def test_a_wrong_token_is_a_bare_404_and_leaks_nothing(small):
    wrong = "f" * len(TOKEN)
    paths = [
        f"/{wrong}/pull.sh",
        f"/{wrong}/f/0",
        f"/{TOKEN[:-1]}/pull.sh",  # one character short
        f"/{TOKEN[:-1]}x/f/0",  # the last character wrong
        f"/{TOKEN}",  # the token without the slash after it
        f"/{TOKEN.upper()}/pull.sh",
        "/pull.sh",
        "/f/0",
        "/",
        f"/x/{TOKEN}/pull.sh",
    ]
    for path in paths:
        status, headers, body = small.request("GET", path)
        assert status == 404, path
        for secret in (TOKEN.encode(), b"hello, pod", b"top secret", b"secret name", b"big.bin", b"a.txt"):
            assert secret not in body, (path, secret)
            assert all(secret.decode() not in value for value in headers.values()), (path, secret)
    for route in ("report", "names"):
        status, _headers, _body = small.request("PUT", f"/{wrong}/{route}", body=b"forged")
        assert status == 404
    assert sorted(os.listdir(small.state_dir)) == ["access.log"]


def test_get_pull_sh_returns_the_script(small):
    status, headers, body = small.request("GET", f"/{TOKEN}/pull.sh")
    assert status == 200
    assert body == serve.pull_script(small.files, small.others).encode()
    assert headers["Content-Length"] == str(len(body))
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith(b"#!/bin/sh\n")


def test_get_a_file_by_id_returns_its_exact_bytes(small):
    for file_id, path, _entry in small.files:
        want = open(os.path.join(small.root, path), "rb").read()  # noqa: SIM115 - a test's one read
        status, headers, body = small.request("GET", f"/{TOKEN}/f/{file_id}")
        assert (status, body) == (200, want), path
        assert headers["Content-Length"] == str(len(want))
        assert headers["Accept-Ranges"] == "bytes"
        assert "Content-Range" not in headers


def test_a_range_request_gets_206_with_its_content_range_and_bytes(small):
    data = _data("big", 70_000)
    big = small.file_id("big.bin")
    status, headers, body = small.request("GET", f"/{TOKEN}/f/{big}", {"Range": "bytes=65536-"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 65536-69999/70000", data[65536:])
    assert headers["Content-Length"] == str(70_000 - 65536)
    status, headers, body = small.request("GET", f"/{TOKEN}/f/{big}", {"Range": "bytes=100-199"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 100-199/70000", data[100:200])
    status, headers, body = small.request("GET", f"/{TOKEN}/f/{big}", {"Range": "bytes=69990-99999"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 69990-69999/70000", data[69990:])
    # The whole file asked for as a range is the whole file, 200.
    status, headers, body = small.request("GET", f"/{TOKEN}/f/{big}", {"Range": "bytes=0-"})
    assert (status, body) == (200, data)
    assert "Content-Range" not in headers
    # A range the server does not serve (several): the whole file.
    status, _headers, body = small.request("GET", f"/{TOKEN}/f/{big}", {"Range": "bytes=0-1,5-6"})
    assert (status, body) == (200, data)


def test_a_range_from_the_size_on_is_416_with_the_size(small):
    big = small.file_id("big.bin")
    for spec in ("bytes=70000-", "bytes=70000-70010", "bytes=99999-"):
        status, headers, body = small.request("GET", f"/{TOKEN}/f/{big}", {"Range": spec})
        assert (status, headers["Content-Range"], body) == (416, "bytes */70000", b""), spec
    empty = small.file_id("empty")
    status, headers, body = small.request("GET", f"/{TOKEN}/f/{empty}", {"Range": "bytes=0-"})
    assert (status, headers["Content-Range"], body) == (416, "bytes */0", b"")
    status, _headers, body = small.request("GET", f"/{TOKEN}/f/{empty}")
    assert (status, body) == (200, b"")


@pytest.mark.parametrize(
    "route", ["f/4", "f/99", "f/-1", "f/", "f/0x1", "f/1/", "f/%201", "f/1?x", "f", "x", "pull.sh/"]
)
def test_an_unknown_route_or_id_is_404(small, route):
    status, _headers, body = small.request("GET", f"/{TOKEN}/{route}")
    assert status == 404
    assert b"hello, pod" not in body


def test_an_id_of_superscript_digits_is_404(small):
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
        sock.sendall(f"GET /{TOKEN}/f/".encode() + b"\xb2 HTTP/1.0\r\n\r\n")
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 404")


def test_an_unreadable_file_is_403(small, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(serve, "_open", refuse)
    status, _headers, _body = small.request("GET", f"/{TOKEN}/f/0")
    assert status == 403


def test_put_report_and_names_store_the_body_in_the_state_dir(small):
    report = b"0 11 " + b"ab" * 32 + b"\nL 0 a.txt\n"
    names = b"./a.txt\0./sub\0./caf\xc3\xa9 \xff\0"
    assert small.request("PUT", f"/{TOKEN}/report", body=report)[0] == 201
    assert small.request("PUT", f"/{TOKEN}/names", body=names)[0] == 201
    with open(os.path.join(small.state_dir, "report"), "rb") as handle:
        assert handle.read() == report
    with open(os.path.join(small.state_dir, "names"), "rb") as handle:
        assert handle.read() == names
    # A second PUT replaces the first; an empty one stores an empty file.
    assert small.request("PUT", f"/{TOKEN}/report", body=b"")[0] == 201
    with open(os.path.join(small.state_dir, "report"), "rb") as handle:
        assert handle.read() == b""
    # Nothing else can be put, and nothing is left behind.
    for route in ("pull.sh", "f/0", "catalog.json", "../report", "access.log"):
        assert small.request("PUT", f"/{TOKEN}/{route}", body=b"x")[0] == 404, route
    assert sorted(os.listdir(small.state_dir)) == ["access.log", "names", "report"]
    assert small.request("GET", f"/{TOKEN}/f/0")[2] == b"hello, pod\n"


def test_the_access_log_records_every_request(small):
    small.request("GET", f"/{TOKEN}/f/1", {"Range": "bytes=10-"})
    small.request("GET", "/nope")
    log = small.log()
    assert re.search(rf'"GET /{TOKEN}/f/1 HTTP/1.1" 206 ', log)
    assert re.search(r'"GET /nope HTTP/1.1" 404 ', log)


# ---------------------------------------------------------------------------------------------
# copy_manifest


FILES = [
    (0, "a", {"kind": "file"}),
    (1, "d/b c", {"kind": "file"}),
    (2, "d/h", {"kind": "file"}),
]
OTHERS = [("d", {"kind": "dir"}, None), ("d/e", {"kind": "dir"}, None), ("l", {"kind": "link"}, "a")]
HASH_A, HASH_B = "a" * 64, "b" * 64


def test_copy_manifest_of_a_complete_report():
    report = f"0 5 {HASH_A}\n1 0 {HASH_B}\n2 7 {HASH_A}\nL 2 a\nD 0\nD 1\n".encode()
    names = b"./a\0./d\0./d/b c\0./d/e\0./d/h\0./l\0"
    got = serve.copy_manifest(FILES, OTHERS, report, names)
    assert got == {
        "format": tree_manifest.FORMAT,
        "algorithm": "sha256",
        "entries": {
            "a": {"type": "file", "size": 5, "hash": HASH_A},
            "d": {"type": "dir"},
            "d/b c": {"type": "file", "size": 0, "hash": HASH_B},
            "d/e": {"type": "dir"},
            "d/h": {"type": "file", "size": 7, "hash": HASH_A},
            "l": {"type": "link", "target": "a"},
        },
        "unreadable": {},
    }
    assert list(got["entries"]) == sorted(got["entries"])


def test_copy_manifest_ignores_unknown_ids_and_malformed_lines():
    report = "\n".join(
        [
            f"0 5 {HASH_A}",
            f"3 5 {HASH_B}",  # no file 3
            f"99 5 {HASH_B}",
            f"-1 5 {HASH_B}",
            f"x 5 {HASH_B}",
            "1 5",  # too few fields
            "",
            "L 3 a",  # others has 3 entries: 0..2
            "L x a",
            "L 2",  # no target
            "L 0 dirs-are-not-links",  # index 0 is a directory, reported as a link anyway
        ]
    ).encode()
    got = serve.copy_manifest(FILES, OTHERS, report, b"")["entries"]
    assert got == {
        "a": {"type": "file", "size": 5, "hash": HASH_A},
        "d": {"type": "link", "target": "dirs-are-not-links"},
    }


def test_copy_manifest_keeps_spaces_in_link_targets_and_hashes():
    report = b"L 2 a b  c \n0 5 " + HASH_A.encode() + b" trailing\n"
    got = serve.copy_manifest(FILES, OTHERS, report, b"")["entries"]
    assert got["l"] == {"type": "link", "target": "a b  c "}
    assert got["a"] == {"type": "file", "size": 5, "hash": HASH_A + " trailing"}


def test_copy_manifest_names_dirs_extras_and_partial_files():
    names = b"\0".join([b"./d", b"d/e", b"./extra", b"./a.strata-part", b"l", b"./d/b c", b"", b"."])
    got = serve.copy_manifest(FILES, OTHERS, b"D 0\n", names)["entries"]
    assert got == {
        ".": {"type": "other"},  # find -mindepth 1 never prints it; here it is just a name
        "a.strata-part": {"type": "other"},
        "d": {"type": "dir"},  # reported as a real directory
        "d/b c": {"type": "other"},  # a name of a source file the report did not cover
        "d/e": {"type": "other"},  # a source directory's name not reported as one (a link there?)
        "extra": {"type": "other"},
        "l": {"type": "other"},  # a source link not reported as a link
    }


def test_copy_manifest_lets_the_report_win_over_the_names():
    report = f"0 5 {HASH_A}\nL 2 a\nD 0\n".encode()
    got = serve.copy_manifest(FILES, OTHERS, report, b"./a\0./l\0./d\0")["entries"]
    assert got == {
        "a": {"type": "file", "size": 5, "hash": HASH_A},
        "d": {"type": "dir"},
        "l": {"type": "link", "target": "a"},
    }


def test_copy_manifest_keeps_names_that_are_not_utf8():
    files = [(0, "caf\u00e9 \udcff", {"kind": "file"})]
    others = [("d\udcfe", {"kind": "dir"}, None)]
    report = f"0 1 {HASH_A}\nD 0\n".encode()
    names = b"./caf\xc3\xa9 \xff\0./d\xfe\0./x\xfd\0"
    got = serve.copy_manifest(files, others, report, names)["entries"]
    assert got == {
        "caf\u00e9 \udcff": {"type": "file", "size": 1, "hash": HASH_A},
        "d\udcfe": {"type": "dir"},
        "x\udcfd": {"type": "other"},
    }


def test_copy_manifest_of_nothing_reported_compares_as_all_missing():
    got = serve.copy_manifest(FILES, OTHERS, b"", b"")
    assert got["entries"] == {}
    source = {"algorithm": "sha256", "entries": {"a": {"type": "file", "size": 5, "hash": HASH_A}}}
    assert tree_manifest.compare(source, got)["missing"] == ["a"]


def test_copy_manifest_keeps_a_link_target_with_a_form_feed():
    report = "L 2 a\x0cb\u2028c\n".encode()
    got = serve.copy_manifest(FILES, OTHERS, report, b"")["entries"]
    assert got["l"] == {"type": "link", "target": "a\x0cb\u2028c"}


def test_copy_manifest_does_not_crash_on_a_line_without_a_size():
    report = f"0  {HASH_A}\n1 5 {HASH_B}\n".encode()
    got = serve.copy_manifest(FILES, OTHERS, report, b"")["entries"]
    assert got["d/b c"] == {"type": "file", "size": 5, "hash": HASH_B}


# ---------------------------------------------------------------------------------------------
# pull.sh, run for real: /bin/sh and curl against the server


def _make_tree(root):
    """A source tree with what a copy can get wrong; returns the paths of the hard-link pair."""
    root = str(root)
    os.makedirs(root)

    def put(rel, data, mode=0o644, mtime=None):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
        if mtime is not None:
            os.utime(path, ns=(mtime, mtime))

    put("plain.txt", b"hello, pod\n", 0o640, 1_600_000_000_123_456_789)
    put("big.bin", _data("big", 300_000), 0o600, 1_500_000_000_999_999_999)
    put("empty", b"", 0o444, 1_400_000_000_000_000_000)
    put("run.sh", b"#!/bin/sh\necho hi\n", 0o755, 1_300_000_000_500_000_000)
    put('with space/it\'s a "quote".txt', b"quoted\n", 0o664, 1_200_000_000_000_000_001)
    put(
        "caf\u00e9 \u00f1/\u30d5\u30a1\u30a4\u30eb.txt",
        b"\xc3\xa9t\xc3\xa9\n",
        0o644,
        1_650_000_000_000_000_000,
    )
    put("d1/d2/deep.txt", _data("deep", 5000), 0o600, 1_620_000_000_000_000_000)
    put("new\nline", b"a name with a newline\n", 0o644, 1_610_000_000_000_000_000)
    put("$HOME `x` *;|&", b"shell characters\n", 0o644, 1_630_000_000_000_000_000)
    with open(os.path.join(os.fsencode(root), b"bad-\xff.bin"), "wb") as handle:
        handle.write(b"not utf-8 name\n")
    put("hard/a", _data("hard", 4096), 0o640, 1_550_000_000_000_000_000)
    os.link(os.path.join(root, "hard/a"), os.path.join(root, "hard/b c"))
    put("hard/empty-a", b"", 0o600, 1_560_000_000_000_000_000)
    os.link(os.path.join(root, "hard/empty-a"), os.path.join(root, "hard/empty-b"))
    os.symlink("plain.txt", os.path.join(root, "link"))
    os.symlink('../with space/it\'s a "quote".txt', os.path.join(root, "d1/quoted link"))
    os.symlink("nowhere/x y", os.path.join(root, "dangling"))
    os.symlink("d1", os.path.join(root, "dir link"))
    os.symlink("/etc/passwd", os.path.join(root, "absolute"))
    os.makedirs(os.path.join(root, "empty dir"))
    # Directory modes and times last, deepest first, as a copy must set them.
    for rel, mode, mtime in [
        ("d1/d2", 0o750, 1_100_000_000_000_000_000),
        ("d1", 0o711, 1_110_000_000_000_000_000),
        ("empty dir", 0o700, 1_120_000_000_000_000_000),
        ("hard", 0o755, 1_130_000_000_000_000_000),
        ("with space", 0o775, 1_140_000_000_000_000_000),
        ("caf\u00e9 \u00f1", 0o755, 1_150_000_000_000_000_000),
    ]:
        os.chmod(os.path.join(root, rel), mode)
        os.utime(os.path.join(root, rel), ns=(mtime, mtime))
    return "hard/a", "hard/b c"


def _lstats(root):
    """{relative path: lstat} of everything under ``root``."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(directory, name)
            found[os.path.relpath(full, root)] = os.lstat(full)
    return found


def _assert_same_tree(source, target):
    """Every name of ``source`` is in ``target`` with its type, bytes, mode, mtime (seconds) and link
    target, and nothing else is; returns the target's lstats."""
    want, got = _lstats(str(source)), _lstats(str(target))
    assert sorted(got) == sorted(want)
    for rel, info in want.items():
        copy = got[rel]
        assert stat.S_IFMT(copy.st_mode) == stat.S_IFMT(info.st_mode), rel
        if stat.S_ISLNK(info.st_mode):
            assert os.readlink(os.path.join(target, rel)) == os.readlink(os.path.join(source, rel)), rel
            continue
        assert stat.S_IMODE(copy.st_mode) == stat.S_IMODE(info.st_mode), rel
        assert copy.st_mtime_ns == info.st_mtime_ns // 10**9 * 10**9, rel
        if stat.S_ISREG(info.st_mode):
            with open(os.path.join(source, rel), "rb") as a, open(os.path.join(target, rel), "rb") as b:
                assert a.read() == b.read(), rel
    return got


def _env(tmp_path):
    """No proxy, no user's curlrc: curl talks straight to 127.0.0.1 with the script's options, and one
    of this test's. curl sends "Expect: 100-continue" with every PUT (-T) and the server, which
    speaks HTTP/1.0, never answers it, so each upload waits curl's expect100-timeout (1 s) first."""
    curl_home = tmp_path / "curl-home"
    curl_home.mkdir(exist_ok=True)
    (curl_home / ".curlrc").write_text("expect100-timeout = 0.01\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CURL_HOME": str(curl_home),
        "no_proxy": "*",
        "NO_PROXY": "*",
        "LC_ALL": "C",
    }


def _pull(served, target, tmp_path):
    """Fetch pull.sh from the server with curl and run it: ``sh pull.sh BASE_URL TARGET``."""
    script = tmp_path / "pull.sh"
    fetched = subprocess.run(
        ["curl", "-fsS", "-o", str(script), f"{served.url}/pull.sh"],
        env=_env(tmp_path),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    return subprocess.run(
        ["/bin/sh", str(script), served.url, str(target)],
        env=_env(tmp_path),
        capture_output=True,
        timeout=60,
        check=False,
    )


def _gets(log):
    """[(file id, status)] of the GET f/ID lines of an access log."""
    return [(int(m[1]), int(m[2])) for m in re.finditer(r'"GET /\w+/f/(\d+) HTTP/[\d.]+" (\d+) ', log)]


def _pull_again(served, target, tmp_path):
    """Run pull.sh once more; the [(file id, status)] it fetched."""
    before = len(served.log())
    done = _pull(served, target, tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return _gets(served.log()[before:])


def _verify(served, source):
    with open(os.path.join(served.state_dir, "report"), "rb") as handle:
        report = handle.read()
    with open(os.path.join(served.state_dir, "names"), "rb") as handle:
        names = handle.read()
    copy = serve.copy_manifest(served.files, served.others, report, names)
    return tree_manifest.compare(tree_manifest.build(str(source), "sha256"), copy)


@NEEDS_SH_CURL
def test_pull_sh_copies_the_tree_reruns_resumes_and_verifies(tmp_path, serving):
    source, target, state = tmp_path / "src", tmp_path / "target", tmp_path / "state"
    first, second = _make_tree(source)
    target.mkdir()
    served = serving(source, state)
    assert served.errors == {}

    # 1. Into an empty target.
    done = _pull(served, target, tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.endswith(b"strata.ops.data_serve: pulled and reported\n")
    got = _assert_same_tree(source, target)
    assert got[first].st_ino == got[second].st_ino and got[first].st_nlink == 2
    assert got["hard/empty-a"].st_ino == got["hard/empty-b"].st_ino
    assert got["empty"].st_size == 0
    assert sorted(os.listdir(state)) == ["access.log", "names", "report"]
    verdict = _verify(served, source)
    assert verdict["identical"], verdict
    non_empty = {i for i, _p, entry in served.files if entry["size"]}
    hard_second = {served.file_id(second), served.file_id("hard/empty-b")}
    fetched = _gets(served.log())
    assert sorted(fetched) == sorted((i, 200) for i in non_empty - hard_second)  # each once, whole

    # 2. Again: every file is complete, nothing is fetched.
    assert _pull_again(served, target, tmp_path) == []
    assert _verify(served, source)["identical"]
    assert _lstats(str(target))[first].st_ino == _lstats(str(target))[second].st_ino

    # 3. Resume: the target holds the first half of big.bin as its partial file.
    data = (source / "big.bin").read_bytes()
    (target / ("big.bin" + serve.PART_SUFFIX)).write_bytes(data[: len(data) // 2])
    (target / "big.bin").unlink()
    assert _pull_again(served, target, tmp_path) == [(served.file_id("big.bin"), 206)]
    assert (target / "big.bin").read_bytes() == data
    assert not (target / ("big.bin" + serve.PART_SUFFIX)).exists()
    copy = os.lstat(target / "big.bin")
    assert (stat.S_IMODE(copy.st_mode), copy.st_mtime) == (0o600, 1_500_000_000)
    assert _verify(served, source)["identical"]

    # 4. An extra file, and one changed behind the copy's back with its size and mtime kept: the
    # quick check skips it, the verify names both.
    (target / "extra file").write_bytes(b"only in the copy\n")
    plain = target / "plain.txt"
    kept = os.lstat(plain)
    os.chmod(plain, 0o600)
    plain.write_bytes(b"HELLO, POD\n")
    os.chmod(plain, stat.S_IMODE(kept.st_mode))
    os.utime(plain, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    assert _pull_again(served, target, tmp_path) == []
    verdict = _verify(served, source)
    assert verdict["extra"] == ["extra file"]
    assert verdict["differing"] == [{"path": "plain.txt", "why": "same size, different content"}]
    assert (verdict["missing"], verdict["identical"]) == ([], False)


@NEEDS_SH_CURL
def test_pull_sh_replaces_what_a_used_target_holds_in_the_way(tmp_path, serving):
    """A target left by an older copy: a file where a symlink belongs, a symlink where a file
    belongs, a partial file longer than the file, a complete file with another mtime."""
    source, target = tmp_path / "src", tmp_path / "target"
    source.mkdir()
    (source / "f").write_bytes(b"the file\n")
    (source / "g").write_bytes(_data("g", 1000))
    (source / "h").write_bytes(b"12345")
    os.symlink("f", source / "l")
    target.mkdir()
    (target / "l").write_bytes(b"a file where the link belongs")
    (tmp_path / "outside").write_bytes(b"not to be touched")
    os.symlink(str(tmp_path / "outside"), target / "f")
    (target / ("g" + serve.PART_SUFFIX)).write_bytes(_data("other", 2000))
    (target / "h").write_bytes(b"12345")
    os.utime(target / "h", (1, 1))
    served = serving(source, tmp_path / "state")
    done = _pull(served, target, tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (tmp_path / "outside").read_bytes() == b"not to be touched"
    assert not os.path.islink(target / "f") and (target / "f").read_bytes() == b"the file\n"
    assert os.readlink(target / "l") == "f"
    assert (target / "g").read_bytes() == _data("g", 1000)
    assert os.lstat(target / "h").st_mtime == int(os.lstat(source / "h").st_mtime)
    assert sorted(os.listdir(target)) == ["f", "g", "h", "l"]
    assert _verify(served, source)["identical"]


@NEEDS_SH_CURL
def test_pull_sh_copies_names_that_begin_with_a_dash(tmp_path, serving):
    source, target = tmp_path / "src", tmp_path / "target"
    source.mkdir()
    (source / "-").write_bytes(b"a lone dash\n")
    (source / "-v").write_bytes(b"dash\n")
    (source / "-d").mkdir()
    (source / "-d" / "x").write_bytes(b"x\n")
    os.symlink("-v", source / "-l")
    for name in ("-", "-v", "-d/x"):
        os.utime(source / name, (1_000_000_000, 1_000_000_000))
    target.mkdir()
    served = serving(source, tmp_path / "state")
    done = _pull(served, target, tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (target / "-v").read_bytes() == b"dash\n"
    assert _verify(served, source)["identical"]
    for name in ("-", "-v", "-d/x"):
        assert os.lstat(target / name).st_mtime == 1_000_000_000, name
    before = len(served.log())
    assert _pull(served, target, tmp_path).returncode == 0
    assert _gets(served.log()[before:]) == []


@NEEDS_SH_CURL
def test_a_symlink_where_the_source_has_a_directory_is_replaced_not_written_through(tmp_path, serving):
    source, target, elsewhere = tmp_path / "src", tmp_path / "target", tmp_path / "elsewhere"
    (source / "d").mkdir(parents=True)
    (source / "d" / "x").write_bytes(b"x\n")
    target.mkdir()
    elsewhere.mkdir()
    os.symlink(str(elsewhere), target / "d")
    served = serving(source, tmp_path / "state")
    done = _pull(served, target, tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert not os.path.islink(target / "d") and (target / "d" / "x").read_bytes() == b"x\n"
    assert not os.listdir(elsewhere)
    assert _verify(served, source)["identical"]


def test_an_address_not_on_this_host_fails_to_bind_and_leaves_nothing(tmp_path):
    state = tmp_path / "state"
    with pytest.raises(OSError) as raised:  # EADDRNOTAVAIL: TEST-NET-3 is no address of this host
        serve.Server(("203.0.113.1", 0), str(tmp_path), "t" * 32, str(state), [], [])
    assert not isinstance(raised.value, AttributeError)
    assert not state.exists()
