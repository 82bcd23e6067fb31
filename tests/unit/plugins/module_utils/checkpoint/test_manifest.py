"""Retention of dump directories: only the dumps of exactly one name count."""

import json
import os

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf


def dump(images_dir, name, stamp):
    path = images_dir / f"{name}-{stamp}"
    path.mkdir()
    (path / mf.MANIFEST).write_text(json.dumps({"name": name}))
    return str(path)


def test_retention_of_app_never_counts_or_removes_the_dumps_of_app_2(tmp_path):
    app = [dump(tmp_path, "app", f"2025010{day}T000000.000Z") for day in (1, 2, 3)]
    other = [dump(tmp_path, "app-2", f"2025010{day}T000000.000Z") for day in (1, 2)]
    assert mf.dumps_of(str(tmp_path), "app") == app
    assert mf.prune(str(tmp_path), "app", 1, app[-1]) == app[:2]
    assert all(os.path.isdir(path) for path in other)
    assert mf.dumps_of(str(tmp_path), "app-2") == other


def test_directories_without_a_manifest_or_a_stamp_are_not_dumps(tmp_path):
    (tmp_path / "app-20250101T000000.000Z").mkdir()  # unfinished: no manifest
    (tmp_path / "app-latest").mkdir()
    (tmp_path / "app-latest" / mf.MANIFEST).write_text("{}")
    assert mf.dumps_of(str(tmp_path), "app") == []
