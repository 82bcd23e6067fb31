"""module_utils/tree_copy: rsync's itemized list, the source scan, sparse extents, the stream plan,
the parts of several hosts, the range receiver (run as a real process) and the progress line.

The itemized lines below are what ``rsync 3.x -aHS -8 -n --delete --out-format='%i %n'`` printed for
a test tree (with ``%n`` a symlink or a hard link shows only its name, never ``-> target``).
"""

import errno
import json
import math
import os
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.strata.ops.plugins.action.data_transfer import progress_line
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import plan, remote

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


# ---------------------------------------------------------------------------------------------
# parse_itemized, decode_name


RSYNC_OUTPUT = b"\n".join(
    [
        b"*deleting   old/x",
        b"*deleting   old/",
        b".d..t...... ./",
        b">f+++++++++ a",
        b">f..t...... b",
        b">f.st...... dir/changed",
        b">f+++++++++ ctl\\#012x",
        b"cD+++++++++ dev",
        b"cS+++++++++ fifo",
        b">f+++++++++ hard",
        b"hf+++++++++ f2",
        b"cL+++++++++ link",
        b"cLc.t...... relinked",
        b">f+++++++++ sp ace \xc3\xa9",
        b">f+++++++++ \xff\xfe",
        b">f+++++++++ a\\#134#041b",
        b"<f+++++++++ pushed",
        b"cd+++++++++ dir/",
        b"cd+++++++++ new dir/",
        b"*deleting   gone dir/",
        b"",
    ]
)


def test_parse_itemized_sorts_rsync_lines_into_what_to_send_create_and_delete():
    got = plan.parse_itemized(RSYNC_OUTPUT)
    assert got == {
        "send": [
            "a",
            "b",
            "dir/changed",
            "ctl\nx",
            "hard",
            "sp ace \u00e9",
            "\udcff\udcfe",
            "a\\#041b",
            "pushed",
        ],
        "conflicts": ["b", "dir/changed"],
        "dirs": [".", "dir", "new dir"],
        "delete": ["old/x", "old", "gone dir"],
        "links": ["dev", "fifo", "f2", "link", "relinked"],
        "attrs": [],
    }


def test_parse_itemized_ignores_lines_that_are_not_itemized():
    noise = b"\n".join(
        [
            b"sending incremental file list",
            b'rsync: [sender] link_stat "/src/x" failed: No such file or directory (2)',
            b'file has vanished: "/src/tmp.1"',
            b"created directory /dst",
            b"IO error encountered -- skipping file deletion",
            b"rsync warning: some files vanished before they could be transferred (code 24)",
            b">f+++++++++",  # flags without a name
            b">f+++++++++ ",  # flags, the space, no name
            b">f+++++++++x",  # no space after the flags
            b".L..t...... time-only-link",  # an attribute of a link only: the attributes pass
            b".f...p..... mode-only",  # the same contents, another mode: the attributes pass too
            b"",
        ]
    )
    assert plan.parse_itemized(noise) == {
        "send": [],
        "dirs": [],
        "delete": [],
        "conflicts": [],
        "links": [],
        "attrs": ["time-only-link", "mode-only"],
    }
    assert plan.parse_itemized(b"") == {
        "send": [],
        "dirs": [],
        "delete": [],
        "conflicts": [],
        "links": [],
        "attrs": [],
    }
    assert plan.parse_itemized(noise + b"\n>f+++++++++ kept\n")["send"] == ["kept"]


def test_parse_itemized_names_round_trip_to_the_source_bytes():
    got = plan.parse_itemized(RSYNC_OUTPUT)["send"]
    raw = [name.encode("utf-8", "surrogateescape") for name in got]
    assert b"ctl\nx" in raw and b"\xff\xfe" in raw and b"sp ace \xc3\xa9" in raw and b"a\\#041b" in raw


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"plain name", "plain name"),
        (b"ctl\\#012x", "ctl\nx"),
        (b"\\#033[31mred", "\x1b[31mred"),
        (b"tab\tx", "tab\tx"),  # rsync prints a tab as it is
        (b"x\\#0411", "x!1"),  # three octal digits, then a plain 1
        (b"not\\#12", "not\\#12"),  # fewer than three digits: not an escape
        (b"not\\#189", "not\\#189"),  # 8 and 9 are not octal
        (b"a\\#134#041b", "a\\#041b"),  # rsync escapes a backslash before # as \#134
        (b"caf\xc3\xa9", "caf\u00e9"),
        (b"caf\\#303\\#251", "caf\u00e9"),  # escaped UTF-8 bytes join into one character
        (b"\xff\xfe", "\udcff\udcfe"),
        (b"\\#377", "\udcff"),
    ],
)
def test_decode_name(raw, name):
    assert plan.decode_name(raw) == name


@pytest.mark.parametrize("source", [b"\xff\xfe", b"\x80abc", b"caf\xc3\xa9", b"mixed\xe9\xc3\xa9", b"ctl\nx"])
def test_decode_name_round_trips_through_surrogateescape(source):
    printed = source.replace(b"\n", b"\\#012")
    assert plan.decode_name(printed).encode("utf-8", "surrogateescape") == source


# ---------------------------------------------------------------------------------------------
# scan, data_extents, clip


def _sparse(path, size=16 * MIB, data=((0, b"A" * 4096), (8 * MIB, b"B" * 4096))):
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, chunk in data:
            handle.seek(offset)
            handle.write(chunk)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello")
    os.chmod(root / "a.txt", 0o640)
    os.utime(root / "a.txt", ns=(1_600_000_000_000_000_001, 1_600_000_000_123_456_789))
    (root / "empty").write_bytes(b"")
    (root / "dir" / "sub").mkdir(parents=True)
    os.chmod(root / "dir", 0o750)
    (root / "dir" / "inner").write_bytes(b"x" * 5000)
    os.symlink("a.txt", root / "link")
    os.symlink("dir", root / "dirlink")
    os.symlink("nowhere", root / "dangling")
    (root / "h1").write_bytes(b"hard" * 100)
    os.link(root / "h1", root / "h2")
    _sparse(root / "sparse")
    os.mkfifo(root / "fifo")
    return root


def test_scan_lists_every_entry_without_following_links(tree):
    entries, errors = plan.scan(str(tree))
    assert errors == {}
    assert sorted(entries) == sorted(
        [
            "a.txt",
            "empty",
            "dir",
            "dir/sub",
            "dir/inner",
            "link",
            "dirlink",
            "dangling",
            "h1",
            "h2",
            "sparse",
            "fifo",
        ]
    )  # nothing under dirlink: the link to a directory is not followed
    kinds = {path: entry["kind"] for path, entry in entries.items()}
    assert kinds == {
        "a.txt": "file",
        "empty": "file",
        "dir": "dir",
        "dir/sub": "dir",
        "dir/inner": "file",
        "link": "link",
        "dirlink": "link",
        "dangling": "link",
        "h1": "file",
        "h2": "file",
        "sparse": "file",
        "fifo": "other",
    }
    sizes = {path: entry["size"] for path, entry in entries.items()}
    assert sizes == {
        "a.txt": 5,
        "empty": 0,
        "dir": 0,
        "dir/sub": 0,
        "dir/inner": 5000,
        "link": 0,
        "dirlink": 0,
        "dangling": 0,
        "h1": 400,
        "h2": 400,
        "sparse": 16 * MIB,
        "fifo": 0,
    }
    assert {path for path, entry in entries.items() if entry["sparse"]} == {"sparse"}
    a = entries["a.txt"]
    assert a["mode"] == 0o640 and entries["dir"]["mode"] == 0o750
    assert a["mtime_ns"] == 1_600_000_000_123_456_789
    assert a["nlink"] == 1
    info = os.stat(tree / "a.txt")
    assert a["inode"] == f"{info.st_dev}:{info.st_ino}"
    assert entries["h1"]["nlink"] == entries["h2"]["nlink"] == 2
    assert entries["h1"]["inode"] == entries["h2"]["inode"]
    assert len({entry["inode"] for entry in entries.values()}) == len(entries) - 1  # only h1/h2 share
    link = os.lstat(tree / "link")
    assert entries["link"]["inode"] == f"{link.st_dev}:{link.st_ino}"  # the link's own inode
    assert entries["link"]["mode"] == stat.S_IMODE(link.st_mode)
    assert set(entries["sparse"]) == {"kind", "size", "mtime_ns", "mode", "inode", "nlink", "sparse"}


@pytest.mark.parametrize("make", ["missing", "file"])
def test_scan_refuses_a_root_that_is_not_a_directory(tmp_path, make):
    root = tmp_path / "not-there"
    if make == "file":
        root.write_bytes(b"x")
    with pytest.raises(InvalidArgument, match=f"source path {root} does not exist or is not a directory"):
        plan.scan(str(root))


def test_scan_records_a_directory_it_cannot_list_and_goes_on(tmp_path, monkeypatch):
    # Root reads any directory whatever its mode (CAP_DAC_OVERRIDE), so the refusal is simulated here;
    # the next test does it with chmod where the tests do not run as root.
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "secret").write_bytes(b"s")
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "f").write_bytes(b"f")
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(os.path.normpath(path)) == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(plan.os, "scandir", scandir)
    entries, errors = plan.scan(str(tmp_path))
    assert errors == {"locked": "Permission denied"}
    assert sorted(entries) == ["locked", "open", "open/f"]
    assert entries["locked"]["kind"] == "dir"


def test_scan_records_an_unreadable_root_as_dot(tmp_path, monkeypatch):
    def scandir(path):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(plan.os, "scandir", scandir)
    assert plan.scan(str(tmp_path)) == ({}, {".": "Permission denied"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists a chmod 000 directory (CAP_DAC_OVERRIDE)")
def test_scan_records_a_chmod_000_directory(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "secret").write_bytes(b"s")
    os.chmod(tmp_path / "locked", 0)
    try:
        entries, errors = plan.scan(str(tmp_path))
    finally:
        os.chmod(tmp_path / "locked", 0o700)
    assert errors == {"locked": "Permission denied"}
    assert sorted(entries) == ["locked"]


def test_data_extents_cover_the_data_of_a_sparse_file(tmp_path):
    path = tmp_path / "sparse"
    _sparse(path)
    extents = plan.data_extents(str(path), 16 * MIB)
    assert extents == sorted(extents) and all(length > 0 for _start, length in extents)
    for offset in (0, 4095, 8 * MIB, 8 * MIB + 4095):  # every written byte lies in an extent
        assert any(start <= offset < start + length for start, length in extents), offset
    assert sum(length for _start, length in extents) <= 2 * MIB  # file systems round to blocks
    assert all(start + length <= 16 * MIB for start, length in extents)
    for start, length in extents:  # extents do not overlap
        assert not any(s < start + length and start < s + n for s, n in extents if s != start)


def test_data_extents_of_a_full_file_an_empty_hole_and_a_trailing_hole(tmp_path):
    full = tmp_path / "full"
    full.write_bytes(b"x" * (3 * MIB + 7))
    assert plan.data_extents(str(full), 3 * MIB + 7) == [[0, 3 * MIB + 7]]
    hole = tmp_path / "hole"
    _sparse(hole, data=())
    assert plan.data_extents(str(hole), 16 * MIB) == []
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert plan.data_extents(str(empty), 0) == []
    head = tmp_path / "head"
    _sparse(head, data=((0, b"H" * 4096),))
    extents = plan.data_extents(str(head), 16 * MIB)
    assert len(extents) == 1 and extents[0][0] == 0 and 4096 <= extents[0][1] <= MIB


def test_data_extents_stay_within_the_size_asked_for(tmp_path):
    path = tmp_path / "grown"
    _sparse(path)  # data at 0 and at 8 MiB; the scan saw 5000 bytes
    extents = plan.data_extents(str(path), 5000)
    assert all(length > 0 and start + length <= 5000 for start, length in extents), extents


EXTENTS = [[0, 4096], [8 * MIB, 4096]]


@pytest.mark.parametrize(
    ("extents", "offset", "length", "clipped"),
    [
        (EXTENTS, 0, MIB, [[0, 4096]]),
        (EXTENTS, 0, 16 * MIB, EXTENTS),
        (EXTENTS, 4096, 8 * MIB - 4096, []),  # touches both extents, holds no byte of either
        (EXTENTS, 2048, 8 * MIB, [[2048, 2048], [8 * MIB, 2048]]),
        (EXTENTS, 8 * MIB + 1000, 100, [[8 * MIB + 1000, 100]]),
        (EXTENTS, 8 * MIB + 4095, MIB, [[8 * MIB + 4095, 1]]),
        (EXTENTS, 4095, 1, [[4095, 1]]),
        (EXTENTS, 0, 0, []),
        (EXTENTS, 16 * MIB, MIB, []),
        ([], 0, MIB, []),
        ([[0, 10]], 3, 4, [[3, 4]]),
    ],
)
def test_clip(extents, offset, length, clipped):
    assert plan.clip(extents, offset, length) == clipped


# ---------------------------------------------------------------------------------------------
# make_plan, select_part, range_key


_inodes = iter(range(1000, 10**9))


def entry(kind="file", size=0, *, inode=None, nlink=1, mode=0o644, mtime_ns=1_700_000_000_000_000_000):
    """An entry as plan._entry makes it."""
    return {
        "kind": kind,
        "size": size,
        "mtime_ns": mtime_ns,
        "mode": mode,
        "inode": inode or f"64769:{next(_inodes)}",
        "nlink": nlink,
        "sparse": False,
    }


def needed(send=(), links=(), dirs=()):
    return {"send": list(send), "links": list(links), "dirs": list(dirs), "delete": [], "conflicts": []}


def _ranges(result, path):
    return sorted(
        (r for s in result["streams"] for r in s["ranges"] if r["path"] == path), key=lambda r: r["offset"]
    )


def test_make_plan_balances_small_and_large_files_over_the_streams():
    entries = {f"small/f{i:03d}": entry(size=(i * 7919) % (60 * KIB) + 1) for i in range(300)}
    large = {"big/a": 10 * MIB, "big/b": 6 * MIB + MIB // 2, "big/c": 4 * MIB + 1}
    entries.update({path: entry(size=size) for path, size in large.items()})
    result = plan.make_plan(
        entries, needed(send=sorted(entries)), streams=4, chunk_size=MIB, large_min=4 * MIB, ranges_done={}
    )
    total = sum(e["size"] for e in entries.values())
    assert result["bytes"] == total and result["files"] == 303
    assert [s["index"] for s in result["streams"]] == [0, 1, 2, 3]
    mean = total / 4
    for stream in result["streams"]:
        assert abs(stream["bytes"] - mean) <= 0.02 * mean, (stream["bytes"], mean)
        assert stream["files_bytes"] == sum(entries[p]["size"] for p in stream["files"])
        assert stream["bytes"] == stream["files_bytes"] + sum(r["bytes"] for r in stream["ranges"])
        assert stream["files"] == sorted(stream["files"])
        assert stream["ranges"] == sorted(stream["ranges"], key=lambda r: (r["path"], r["offset"]))
    sent = [p for s in result["streams"] for p in s["files"]]
    assert sorted(sent) == sorted(p for p in entries if p.startswith("small/"))  # each exactly once
    assert sorted(result["large"]) == sorted(large)
    for path, size in large.items():
        ranges = _ranges(result, path)
        count = math.ceil(size / MIB)
        assert result["large"][path] == {
            "key": plan.range_key(path, entries[path]),
            "size": size,
            "mtime_ns": entries[path]["mtime_ns"],
            "mode": 0o644,
            "ranges": count,
        }
        assert [r["offset"] for r in ranges] == [i * MIB for i in range(count)]
        assert [r["length"] for r in ranges] == [MIB] * (count - 1) + [size - (count - 1) * MIB]
        assert all(r["segments"] == [[r["offset"], r["length"]]] for r in ranges)  # not sparse: all data
        assert all(r["bytes"] == r["length"] and r["done"] == 0 for r in ranges)
        assert {r["key"] for r in ranges} == {result["large"][path]["key"]}
    assert len({r["path"] + str(r["offset"]) for s in result["streams"] for r in s["ranges"]}) == 22
    # a large file uses several streams, not one
    assert len({s["index"] for s in result["streams"] for r in s["ranges"] if r["path"] == "big/a"}) == 4


def test_make_plan_keeps_hard_link_groups_in_one_stream_and_counts_their_bytes_once():
    entries = {
        "h/one": entry(size=300 * KIB, inode="9:1", nlink=3),
        "h/two": entry(size=300 * KIB, inode="9:1", nlink=3),
        "h/three": entry(size=300 * KIB, inode="9:1", nlink=3),
        "pair/x": entry(size=50 * KIB, inode="9:2", nlink=2),
        "pair/y": entry(size=50 * KIB, inode="9:2", nlink=2),
        "big-linked": entry(size=8 * MIB, inode="9:3", nlink=2),  # hard-linked: rsync, never ranges
        **{f"f{i}": entry(size=100 * KIB) for i in range(6)},
        "ln": entry("link"),
        "dev": entry("other"),
    }
    result = plan.make_plan(
        entries,
        needed(
            send=["h/one", "pair/x", "big-linked", *(f"f{i}" for i in range(6))],
            links=["h/three", "h/two", "pair/y", "ln", "dev"],
        ),
        streams=3,
        chunk_size=MIB,
        large_min=4 * MIB,
        ranges_done={},
    )
    assert result["large"] == {} and all(s["ranges"] == [] for s in result["streams"])
    by_path = {p: s["index"] for s in result["streams"] for p in s["files"]}
    assert sorted(by_path) == sorted(entries)
    assert by_path["h/one"] == by_path["h/two"] == by_path["h/three"]
    assert by_path["pair/x"] == by_path["pair/y"]
    assert result["bytes"] == 300 * KIB + 50 * KIB + 8 * MIB + 6 * 100 * KIB
    stream = next(s for s in result["streams"] if "h/one" in s["files"])
    unique = {
        entries[p]["inode"]: entries[p]["size"] for p in stream["files"] if entries[p]["kind"] == "file"
    }
    assert stream["files_bytes"] == stream["bytes"] == sum(unique.values())
    assert result["files"] == 14


def test_make_plan_sends_a_new_hard_link_with_the_rest_of_its_group():
    entries = {
        "kept": entry(size=5, inode="9:7", nlink=2),  # unchanged at the destination: not listed
        "new": entry(size=5, inode="9:7", nlink=2),
    }
    result = plan.make_plan(
        entries, needed(links=["new"]), streams=2, chunk_size=MIB, large_min=4 * MIB, ranges_done={}
    )
    assert [s["files"] for s in result["streams"]] == [["kept", "new"]]


def test_make_plan_counts_what_the_destination_already_has():
    entries = {"disk.img": entry(size=3 * MIB + 100), "other.img": entry(size=3 * MIB + 100, mtime_ns=5)}
    key = plan.range_key("disk.img", entries["disk.img"])
    ranges_done = {
        key: {"0": MIB, str(MIB): 1000, str(2 * MIB): 10**9, "999": 7},  # 10**9 is clipped to the range
        plan.range_key("disk.img", entry(size=3 * MIB + 99)): {str(3 * MIB): 100},  # another file's work
    }
    result = plan.make_plan(
        entries,
        needed(send=["disk.img"]),
        streams=2,
        chunk_size=MIB,
        large_min=2 * MIB,
        ranges_done=ranges_done,
    )
    ranges = _ranges(result, "disk.img")
    assert [(r["offset"], r["length"], r["bytes"], r["done"]) for r in ranges] == [
        (0, MIB, MIB, MIB),
        (MIB, MIB, MIB, 1000),
        (2 * MIB, MIB, MIB, MIB),
        (3 * MIB, 100, 100, 0),
    ]
    assert result["bytes"] == (MIB - 1000) + 100
    assert sum(s["bytes"] for s in result["streams"]) == result["bytes"]
    assert result["files"] == 1 and result["large"]["disk.img"]["ranges"] == 4


def test_make_plan_lists_the_ranges_of_a_file_already_written_so_it_is_moved_into_place():
    entries = {"done.img": entry(size=2 * MIB + 1)}
    key = plan.range_key("done.img", entries["done.img"])
    ranges_done = {key: {"0": MIB, str(MIB): MIB, str(2 * MIB): 1}}
    result = plan.make_plan(
        entries,
        needed(send=["done.img"]),
        streams=4,
        chunk_size=MIB,
        large_min=2 * MIB,
        ranges_done=ranges_done,
    )
    assert result["bytes"] == 0
    ranges = _ranges(result, "done.img")
    assert [(r["offset"], r["bytes"], r["done"]) for r in ranges] == [
        (0, MIB, MIB),
        (MIB, MIB, MIB),
        (2 * MIB, 1, 1),
    ]
    assert result["streams"] and all(s["bytes"] == 0 for s in result["streams"])
    assert result["attributes"] == ["done.img"]


def test_make_plan_sends_only_the_data_of_a_sparse_large_file():
    entries = {"vm.img": entry(size=3 * MIB), "hollow.img": entry(size=2 * MIB)}
    extents = {
        "vm.img": [[0, 4096], [MIB - 100, 200], [2 * MIB + 512 * KIB, 4096]],
        "hollow.img": [],  # all hole
    }
    key = plan.range_key("vm.img", entries["vm.img"])
    result = plan.make_plan(
        entries,
        needed(send=["vm.img", "hollow.img"]),
        streams=2,
        chunk_size=MIB,
        large_min=2 * MIB,
        ranges_done={key: {"0": 4000}},
        extents=extents,
    )
    assert [
        (r["offset"], r["length"], r["segments"], r["bytes"], r["done"]) for r in _ranges(result, "vm.img")
    ] == [
        (0, MIB, [[0, 4096], [MIB - 100, 100]], 4196, 4000),
        (MIB, MIB, [[MIB, 100]], 100, 0),
        (2 * MIB, MIB, [[2 * MIB + 512 * KIB, 4096]], 4096, 0),
    ]
    assert [(r["segments"], r["bytes"]) for r in _ranges(result, "hollow.img")] == [([], 0), ([], 0)]
    assert result["bytes"] == 196 + 100 + 4096
    assert result["large"]["hollow.img"]["ranges"] == 2


def test_make_plan_attributes_files_and_small_edge_cases():
    entries = {
        "d": entry("dir"),
        "d/big": entry(size=5 * MIB, mode=0o600),
        "a-big": entry(size=4 * MIB),
        "just-under": entry(size=4 * MIB - 1),
        "ln": entry("link"),
    }
    result = plan.make_plan(
        entries,
        needed(
            send=["d/big", "a-big", "just-under", "gone-since-the-scan"], links=["ln"], dirs=["d", ".", "b"]
        ),
        streams=8,
        chunk_size=MIB,
        large_min=4 * MIB,
        ranges_done={},
    )
    assert result["attributes"] == [".", "b", "d", "a-big", "d/big"]
    assert sorted(result["large"]) == ["a-big", "d/big"] and result["large"]["d/big"]["mode"] == 0o600
    files = sorted(p for s in result["streams"] for p in s["files"])
    assert files == ["gone-since-the-scan", "just-under", "ln"]  # one the scan did not see goes as it is
    assert result["files"] == 5  # every path rsync listed (send and links)
    assert len(result["streams"]) == 8  # 9 ranges and 2 files over 8 streams
    assert result["bytes"] == 9 * MIB + 4 * MIB - 1


def test_make_plan_drops_streams_with_nothing_and_is_independent_of_the_order_given():
    entries = {"x": entry(size=10), "y": entry(size=20)}
    result = plan.make_plan(
        entries, needed(send=["x", "y"]), streams=8, chunk_size=MIB, large_min=MIB, ranges_done={}
    )
    assert [(s["index"], s["files"]) for s in result["streams"]] == [(0, ["y"]), (1, ["x"])]
    assert plan.make_plan(entries, needed(), streams=3, chunk_size=MIB, large_min=MIB, ranges_done={}) == {
        "streams": [],
        "large": {},
        "attributes": [],
        "bytes": 0,
        "files": 0,
    }
    many = {f"p{i:02d}": entry(size=(i * 37) % 11 * MIB + i) for i in range(40)}
    paths = sorted(many)
    forward = plan.make_plan(
        many, needed(send=paths), streams=5, chunk_size=MIB, large_min=4 * MIB, ranges_done={}
    )
    backward = plan.make_plan(
        dict(reversed(list(many.items()))),
        needed(send=paths[::-1]),
        streams=5,
        chunk_size=MIB,
        large_min=4 * MIB,
        ranges_done={},
    )
    assert forward == backward


@pytest.mark.parametrize(
    ("streams", "chunk_size", "message"),
    [
        (0, MIB, "streams must be 1 or more, got 0"),
        (-2, MIB, "streams must be 1 or more, got -2"),
        (4, MIB - 1, "chunk_size must be at least 1 MiB, got 1048575 bytes"),
        (4, 0, "chunk_size must be at least 1 MiB, got 0 bytes"),
    ],
)
def test_make_plan_refuses_impossible_settings(streams, chunk_size, message):
    with pytest.raises(InvalidArgument, match=message):
        plan.make_plan({}, needed(), streams=streams, chunk_size=chunk_size, large_min=MIB, ranges_done={})


def _tree_entries():
    entries = {f"data/f{i:02d}": entry(size=(i * 7) % 13 * KIB * 50 + i) for i in range(40)}
    entries.update(
        {
            "data": entry("dir"),
            "data/sub": entry("dir"),
            "links/l1": entry("link"),
            "links": entry("dir"),
            "fifo": entry("other"),
            "hard/a": entry(size=900 * KIB, inode="7:1", nlink=3),
            "hard/b": entry(size=900 * KIB, inode="7:1", nlink=3),
            "hard/c": entry(size=900 * KIB, inode="7:1", nlink=3),
        }
    )
    return entries


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_select_part_splits_the_tree_into_disjoint_parts_that_cover_it(count):
    entries = _tree_entries()
    parts = [plan.select_part(entries, index, count) for index in range(count)]
    assert set().union(*parts) == set(entries)
    assert sum(len(part) for part in parts) == len(entries)  # disjoint
    non_files = {p for p, e in entries.items() if e["kind"] != "file"}
    assert non_files <= parts[0]
    assert all(not (part & non_files) for part in parts[1:])
    assert sum({"hard/a", "hard/b", "hard/c"} <= part for part in parts) == 1
    shuffled = dict(sorted(entries.items(), key=lambda item: hash(item[0]) % 97))
    assert [plan.select_part(shuffled, index, count) for index in range(count)] == parts  # every host agrees


def test_select_part_balances_bytes():
    entries = {f"f{i:03d}": entry(size=(i * 131) % 997 * KIB) for i in range(200)}
    loads = [sum(entries[p]["size"] for p in plan.select_part(entries, i, 4)) for i in range(4)]
    assert max(loads) - min(loads) <= 997 * KIB + plan.PER_FILE_COST


@pytest.mark.parametrize(("index", "count"), [(-1, 3), (3, 3), (0, 0), (5, 2)])
def test_select_part_refuses_an_index_out_of_range(index, count):
    with pytest.raises(InvalidArgument, match=f"part index must be in 0..{count - 1}, got {index}"):
        plan.select_part(_tree_entries(), index, count)


def test_range_key_is_stable_and_names_one_version_of_one_file():
    big = {"size": 16 * MIB, "mtime_ns": 1_700_000_000_123_456_789}
    assert plan.range_key("big/file.img", big) == "8b4932e893462c80426f"  # kept across releases
    assert plan.range_key("\udcff", {"size": 1, "mtime_ns": 2}) == "d2fccd72418077ffc7f0"  # non-UTF-8 name
    key = plan.range_key("big/file.img", big)
    assert plan.range_key("big/file.img", dict(big, mode=0o600, inode="x", nlink=3)) == key  # other fields
    changed = {
        plan.range_key("big/file.img", dict(big, size=big["size"] + 1)),
        plan.range_key("big/file.img", dict(big, mtime_ns=big["mtime_ns"] + 1)),
        plan.range_key("big/file.imh", big),
    }
    assert len(changed) == 3 and key not in changed
    assert all(len(k) == 20 and int(k, 16) >= 0 for k in changed)


# ---------------------------------------------------------------------------------------------
# remote.RECEIVER, run as the destination runs it


def _pattern(size, seed=1):
    """Bytes with no zero among them, so a written byte is told from a hole."""
    unit = bytes((seed + i) % 255 + 1 for i in range(255))
    return (unit * (size // 255 + 1))[:size]


class Receiver:
    """``python3 -c RECEIVER root work`` with pipes; answers are read with a deadline."""

    def __init__(self, root, work):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", remote.RECEIVER, str(root), str(work)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self.buffer = b""
        assert self.answer() == "ready"

    def answer(self, timeout=10):
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            ready, _writable, _failed = select.select([fd], [], [], timeout)
            assert ready, "the receiver did not answer in time"
            data = os.read(fd, 4096)
            assert data, f"the receiver ended: {self.proc.wait()} {self.proc.stderr.read()!r}"
            self.buffer += data
        line, _newline, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, **request):
        self.send(json.dumps(request).encode() + b"\n")

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def range(self, key, offset, size, segments, data):
        """One range; ``data`` is all of the range's data: the receiver is sent what it lacks."""
        self.ask(op="range", key=key, offset=offset, size=size, segments=segments)
        done = int(self.answer())
        self.send(data[done:])
        assert self.answer() == "ok"
        return done

    def close(self):
        self.proc.stdin.close()
        code = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture
def receivers(tmp_path):
    root = tmp_path / "dest"
    work = root / plan.WORK_DIR
    started = []

    def start():
        started.append(Receiver(root, work))
        return started[-1]

    start.root, start.work = root, work
    yield start
    for receiver in started:
        if receiver.proc.poll() is None:
            receiver.proc.kill()
            receiver.proc.wait()
        for pipe in (receiver.proc.stdin, receiver.proc.stdout, receiver.proc.stderr):
            if not pipe.closed:
                pipe.close()


def _read_at(path, offset, size):
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def test_receiver_writes_a_sparse_range_and_moves_the_file_into_place(receivers):
    receiver, work = receivers(), receivers.work
    assert os.listdir(work) == []  # the greeting comes once the work directory exists
    size, segments = 16 * MIB, [[0, 4096], [8 * MIB, 4096]]
    data = _pattern(8192)
    assert receiver.range("k1", 0, size, segments, data) == 0
    part = work / "k1.part"
    info = os.stat(part)
    assert info.st_size == size
    assert info.st_blocks * 512 <= MIB  # holes stay holes
    assert _read_at(part, 0, 4096) == data[:4096]
    assert _read_at(part, 8 * MIB, 4096) == data[4096:]
    assert _read_at(part, 4096, 4096) == bytes(4096) and _read_at(part, 16 * MIB - 10, 10) == bytes(10)
    assert (work / "k1.0").read_text() == "8192"
    assert receiver.range("k1", 0, size, segments, data) == 8192  # already written: nothing sent again
    assert sorted(os.listdir(work)) == ["k1.0", "k1.part"]

    name = "deep/dir with space/f\u00efle \u00e9.img"
    receiver.ask(op="finish", key="k1", path=name, mtime_ns=1_500_000_000_123_456_789, mode=0o640)
    assert receiver.answer() == "ok"
    final = receivers.root / name
    info = os.stat(final)
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_mtime_ns == 1_500_000_000_123_456_789
    assert info.st_size == size and _read_at(final, 8 * MIB, 4096) == data[4096:]
    assert os.listdir(work) == []  # part moved, markers removed
    assert receiver.close() == 0


def test_receiver_takes_several_ranges_and_files_on_one_connection(receivers):
    receiver, work = receivers(), receivers.work
    size = 2 * MIB + 500
    data = _pattern(size, seed=7)
    for offset in (MIB, 0, 2 * MIB):  # in any order, as the streams send them
        length = min(MIB, size - offset)
        assert receiver.range("big", offset, size, [[offset, length]], data[offset : offset + length]) == 0
    assert sorted(os.listdir(work)) == ["big.0", "big.1048576", "big.2097152", "big.part"]
    assert (work / "big.2097152").read_text() == "500"
    assert receiver.range("top", 0, 3, [[0, 3]], b"abc") == 0
    for key, path, mode in (("big", "big.bin", 0o600), ("top", "top", 0o755)):
        receiver.ask(op="finish", key=key, path=path, mtime_ns=123_456_789, mode=mode)
        assert receiver.answer() == "ok"
    assert (receivers.root / "big.bin").read_bytes() == data
    assert (receivers.root / "top").read_bytes() == b"abc"
    assert stat.S_IMODE(os.stat(receivers.root / "top").st_mode) == 0o755
    assert os.stat(receivers.root / "top").st_mtime_ns == 123_456_789
    assert os.listdir(work) == []
    assert receiver.close() == 0


def test_receiver_records_what_arrived_before_the_connection_was_cut_and_resumes_there(receivers):
    work = receivers.work
    size, segments = 16384, [[0, 3000], [10000, 3000]]
    data = _pattern(6000, seed=3)
    first = receivers()
    first.ask(op="range", key="cut", offset=0, size=size, segments=segments)
    assert first.answer() == "0"
    first.send(data[:4500])  # past the first segment, into the second
    assert first.close() == 3
    assert (work / "cut.0").read_text() == "4500"
    assert _read_at(work / "cut.part", 0, 3000) == data[:3000]
    assert _read_at(work / "cut.part", 10000, 1500) == data[3000:4500]
    assert _read_at(work / "cut.part", 11500, 1500) == bytes(1500)

    second = receivers()
    second.ask(op="range", key="cut", offset=0, size=size, segments=segments)
    assert second.answer() == "4500"
    second.send(data[4500:])
    assert second.answer() == "ok"
    assert (work / "cut.0").read_text() == "6000"
    second.ask(op="finish", key="cut", path="resumed", mtime_ns=10**18, mode=0o644)
    assert second.answer() == "ok"
    expected = bytearray(size)
    expected[0:3000], expected[10000:13000] = data[:3000], data[3000:]
    assert (receivers.root / "resumed").read_bytes() == bytes(expected)
    assert second.close() == 0


def test_receiver_cut_exactly_at_a_segment_boundary(receivers):
    work = receivers.work
    segments = [[100, 50], [400, 50]]
    data = _pattern(100, seed=9)
    first = receivers()
    first.ask(op="range", key="edge", offset=0, size=1000, segments=segments)
    assert first.answer() == "0"
    first.send(data[:50])
    assert first.close() == 3
    assert (work / "edge.0").read_text() == "50"
    second = receivers()
    assert second.range("edge", 0, 1000, segments, data) == 50
    part = (work / "edge.part").read_bytes()
    assert part == bytes(100) + data[:50] + bytes(250) + data[50:] + bytes(550)
    assert second.close() == 0


def test_receiver_records_the_bytes_written_when_terminated(receivers):
    work = receivers.work
    data = _pattern(MIB, seed=5)
    receiver = receivers()
    receiver.ask(op="range", key="term", offset=0, size=MIB, segments=[[0, MIB]])
    assert receiver.answer() == "0"
    receiver.send(data[:100_000])
    deadline = time.monotonic() + 10
    while not (
        os.path.exists(work / "term.part") and _read_at(work / "term.part", 99_999, 1) == data[99_999:100_000]
    ):
        assert time.monotonic() < deadline, "the receiver did not write what was sent"
        time.sleep(0.01)
    time.sleep(0.1)  # back in its read, waiting for more
    receiver.proc.send_signal(signal.SIGTERM)
    assert receiver.proc.wait(timeout=10) == 3
    assert (work / "term.0").read_text() == "100000"
    resumed = receivers()
    assert resumed.range("term", 0, MIB, [[0, MIB]], data) == 100_000
    assert (work / "term.part").read_bytes() == data
    assert resumed.close() == 0


def test_receiver_trusts_a_marker_only_up_to_the_range_and_reads_garbage_as_nothing(receivers):
    work = receivers.work
    work.mkdir(parents=True)
    (work / "k.0").write_text("999999")
    (work / "k.100").write_text("not a number")
    receiver = receivers()
    receiver.ask(op="range", key="k", offset=0, size=200, segments=[[0, 100]])
    assert receiver.answer() == "100"
    assert receiver.answer() == "ok"
    assert (work / "k.0").read_text() == "100"
    assert receiver.range("k", 100, 200, [[100, 100]], _pattern(100)) == 0
    assert (work / "k.100").read_text() == "100"
    assert receiver.close() == 0


def test_receiver_puts_a_non_utf8_name_in_place(receivers):
    receiver = receivers()
    receiver.range("raw", 0, 4, [[0, 4]], b"data")
    name = b"dir\xff/f\xfe".decode("utf-8", "surrogateescape")
    receiver.ask(op="finish", key="raw", path=name, mtime_ns=5_000_000_000, mode=0o600)
    assert receiver.answer() == "ok"
    with open(os.path.join(bytes(receivers.root), b"dir\xff", b"f\xfe"), "rb") as handle:
        assert handle.read() == b"data"
    assert os.listdir(receivers.work) == []
    assert receiver.close() == 0


# ---------------------------------------------------------------------------------------------
# the action plugin's progress line


def test_progress_line_shows_done_total_rate_eta_and_streams_by_state():
    progress = {
        "bytes_total": 4 * GIB,
        "bytes_done": GIB,
        "rate_bytes_s": 50 * MIB,
        "eta_s": 3725,
        "streams": [{"state": s} for s in ("running", "done", "running", "retrying", "running")],
    }
    assert progress_line("web1", progress) == (
        "[web1] data_transfer 25.0%: 1.0 GiB of 4.0 GiB, 50.0 MiB/s, ETA 1:02:05; "
        "streams 1 done, 1 retrying, 3 running"
    )


@pytest.mark.parametrize(
    ("done", "total", "text"),
    [
        (0, 1023, "0.0%: 0 B of 1023 B"),
        (1, 3, "33.3%: 1 B of 3 B"),
        (1536, 1536, "100.0%: 1.5 KiB of 1.5 KiB"),
        (1024, MIB - 1, "0.1%: 1.0 KiB of 1024.0 KiB"),
        (3 * GIB, 2048 * 1024**4, "0.0%: 3.0 GiB of 2048.0 TiB"),
        (5, 0, "-: 5 B of 0 B"),
    ],
)
def test_progress_line_sizes_and_percent(done, total, text):
    line = progress_line("h", {"bytes_total": total, "bytes_done": done, "streams": [{"state": "running"}]})
    assert line == f"[h] data_transfer {text}, 0 B/s, ETA -; streams 1 running"


@pytest.mark.parametrize(
    ("eta", "text"), [(0, "0:00:00"), (59, "0:00:59"), (61, "0:01:01"), (90_000, "25:00:00"), (None, "-")]
)
def test_progress_line_eta(eta, text):
    line = progress_line(
        "h", {"bytes_total": 10, "bytes_done": 5, "rate_bytes_s": 1, "eta_s": eta, "streams": []}
    )
    assert line.startswith(f"[h] data_transfer 50.0%: 5 B of 10 B, 1 B/s, ETA {text}; streams")


@pytest.mark.parametrize(
    "progress",
    [{}, {"bytes_total": None, "bytes_done": None, "rate_bytes_s": None, "eta_s": None, "streams": []}],
)
def test_progress_line_with_fields_missing(progress):
    line = progress_line("h", progress)
    assert line == "[h] data_transfer -: 0 B of 0 B, 0 B/s, ETA -; streams -"
