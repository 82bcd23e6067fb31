"""module_utils/tree_manifest.py: building on real files, reuse by size and mtime, and compare."""

import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import tree_manifest as tm
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument


def manifest(entries, algorithm="blake2b", unreadable=None):
    return {"format": tm.FORMAT, "algorithm": algorithm, "entries": entries, "unreadable": unreadable or {}}


def f(size, digest):
    return {"type": "file", "size": size, "mtime_ns": 1, "hash": digest}


def test_compare_names_every_kind_of_difference():
    source = manifest(
        {
            "a": f(3, "h1"),
            "b": f(3, "h2"),
            "c": f(3, "h3"),
            "d": {"type": "link", "target": "a"},
            "e": {"type": "dir"},
            "gone": f(1, "h4"),
        }
    )
    dest = manifest(
        {
            "a": dict(f(3, "h1"), mtime_ns=99),  # mtime alone is no difference
            "b": f(3, "other"),
            "c": f(4, "h3"),
            "d": {"type": "link", "target": "b"},
            "e": f(0, "h0"),
            "stray": f(1, "h5"),
        },
        unreadable={"locked": "Permission denied"},
    )
    got = tm.compare(source, dest)
    assert got["missing"] == ["gone"] and got["extra"] == ["stray"]
    assert got["differing"] == [
        {"path": "b", "why": "same size, different content"},
        {"path": "c", "why": "3 bytes at the source, 4 at the destination"},
        {"path": "d", "why": "link to 'a' at the source, to 'b' at the destination"},
        {"path": "e", "why": "a dir at the source, a file at the destination"},
    ]
    assert got["unreadable_dest"] == ["locked"] and got["identical"] is False
    assert tm.compare(source, source)["identical"] is True


def test_manifests_of_two_algorithms_are_not_compared():
    with pytest.raises(InvalidArgument, match="made with blake2b and xxh128"):
        tm.compare(manifest({}), manifest({}, algorithm="xxh128"))


def test_build_reuses_hashes_by_size_and_mtime_only_for_the_same_root_and_algorithm(tmp_path):
    (tmp_path / "x").write_bytes(b"12345")
    first = tm.build(str(tmp_path), workers=2)
    assert first["stats"]["hashed"] == 1
    forged = dict(first, entries={"x": dict(first["entries"]["x"], hash="kept")})
    assert tm.build(str(tmp_path), previous=forged)["entries"]["x"]["hash"] == "kept"
    assert tm.build(str(tmp_path / ".."), previous=forged)["stats"]["reused"] == 0  # another root
    os.utime(tmp_path / "x", ns=(1, 1))
    assert tm.build(str(tmp_path), previous=forged)["entries"]["x"]["hash"] != "kept"  # mtime moved


def test_same_tree_only_when_everything_found_is_as_kept(tmp_path):
    (tmp_path / "x").write_bytes(b"12345")
    first = tm.build(str(tmp_path), workers=2)
    again = tm.build(str(tmp_path), previous=first)
    assert tm.same_tree(first, again) and not tm.same_tree(None, again)
    assert not tm.same_tree(dict(first, algorithm="xxh128"), again)
    (tmp_path / "y").write_bytes(b"")
    assert not tm.same_tree(first, tm.build(str(tmp_path), previous=first))


def test_a_kept_manifest_that_is_not_ours_is_ignored(tmp_path):
    (tmp_path / "m.json").write_text('{"format": "other"}')
    assert tm.load(str(tmp_path / "m.json")) is None
    assert tm.load(str(tmp_path / "none.json")) is None
    (tmp_path / "bad.json").write_text("{")
    assert tm.load(str(tmp_path / "bad.json")) is None


def test_hashes_are_blake2b_128_of_the_bytes(tmp_path):
    import hashlib  # noqa: PLC0415

    (tmp_path / "x").write_bytes(b"frames" * 400000)
    got = tm.build(str(tmp_path))["entries"]["x"]["hash"]
    assert got == hashlib.blake2b(b"frames" * 400000, digest_size=16).hexdigest()
