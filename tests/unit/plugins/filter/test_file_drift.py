"""The strata.ops.file_drift filter: what a copy or file task would change, from host_info or
storage_info's read of the path."""

import hashlib

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.file_drift import FilterModule, file_drift

CONTENT = '{\n  "log-driver": "journald"\n}\n'
FILE = {
    "path": "/etc/docker/daemon.json",
    "exists": True,
    "type": "file",
    "mode": "0644",
    "owner": "root",
    "group": "root",
    "sha1": hashlib.sha1(CONTENT.encode()).hexdigest(),
}
WANT = {"content": CONTENT, "mode": "0644", "owner": "root", "group": "root"}


def test_a_file_as_wanted_does_not_drift():
    assert file_drift(FILE, **WANT) == []


def test_other_content_mode_and_owner_are_each_named():
    state = dict(FILE, sha1="0" * 40, mode="0600", owner="daemon")
    assert file_drift(state, **WANT) == ["content", "mode 0600, not 0644", "owner daemon, not root"]


def test_a_missing_path_drifts_whatever_else_is_asked():
    assert file_drift(dict(FILE, exists=False, type=None), **WANT) == ["missing"]


def test_the_wrong_type_is_named():
    assert file_drift(dict(FILE, type="directory", sha1=None), **WANT) == ["a directory, not a file"]


def test_only_what_is_asked_is_compared():
    assert file_drift(dict(FILE, mode="0600"), content=CONTENT) == []


def test_a_storage_info_path_entry_is_read_the_same_way():
    mounted = {"kind": "tmpfs", "file_type": "directory", "mode": "0755", "owner": "root", "group": "root"}
    want = {"type": "directory", "mode": "0755", "owner": "root", "group": "root"}
    assert file_drift(mounted, **want) == []
    assert file_drift(dict(mounted, kind="missing", file_type=None), **want) == ["missing"]
    assert file_drift(dict(mounted, mode="0700"), **want) == ["mode 0700, not 0755"]


def test_anything_else_is_an_error():
    with pytest.raises(AnsibleFilterError, match="expected one entry of host_info's files"):
        file_drift("/etc/docker/daemon.json")


def test_registered_under_its_name():
    assert FilterModule().filters()["file_drift"] is file_drift
