# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.file_drift: how a file that host_info read differs from what a task would write."""

import hashlib

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: file_drift
short_description: How a file read by host_info differs from what a copy or file task would make of it
version_added: "0.2.0"
description:
  - Takes one entry of M(strata.ops.host_info)'s C(files) (or of M(strata.ops.storage_info)'s
    C(paths), whose C(kind=missing) and C(file_type) say the same) and says what differs from the wanted
    type, content, mode, owner and group; an empty list means the task that writes the file
    would change nothing, so it can be skipped.
  - Content is compared by SHA-1, the checksum M(ansible.builtin.copy) compares.
options:
  _input:
    description: One entry of host_info's C(files) or of storage_info's C(paths).
    type: dict
    required: true
  type:
    description: The wanted type, C(file) or C(directory).
    type: str
    default: file
  content:
    description: The wanted content of a file (what the copy task writes); not compared when omitted.
    type: str
  mode:
    description: The wanted mode as four octal digits, e.g. C("0644"); not compared when omitted.
    type: str
  owner:
    description: The wanted owner name; not compared when omitted.
    type: str
  group:
    description: The wanted group name; not compared when omitted.
    type: str
"""

EXAMPLES = r"""
- name: Write the config only when it differs
  ansible.builtin.copy:
    dest: /etc/docker/daemon.json
    content: "{{ wanted }}"
    mode: "0644"
  when: >-
    host.files['/etc/docker/daemon.json']
    | strata.ops.file_drift(content=wanted, mode='0644') | length > 0
"""

RETURN = r"""
_value:
  description:
    - What differs, one phrase each (C(missing), C(content), C(mode 0600, not 0644) ...).
    - Empty when nothing does.
  type: list
  elements: str
"""


def _as_host_info(state):
    """A storage_info path entry in host_info's terms."""
    if isinstance(state, dict) and "exists" not in state and "kind" in state and "file_type" in state:
        return dict(state, exists=state["kind"] != "missing", type=state["file_type"], sha1=None)
    return state


def file_drift(state, *, type="file", content=None, mode=None, owner=None, group=None):
    state = _as_host_info(state)
    if not isinstance(state, dict) or "exists" not in state:
        raise AnsibleFilterError(
            f"file_drift: expected one entry of host_info's files or storage_info's paths, got {state!r}"
        )
    if not state["exists"]:
        return ["missing"]
    if state["type"] != type:
        return [f"a {state['type']}, not a {type}"]
    drift = []
    if content is not None and state["sha1"] != hashlib.sha1(content.encode("utf-8")).hexdigest():
        drift.append("content")
    for field, wanted in (("mode", mode), ("owner", owner), ("group", group)):
        if wanted is not None and state[field] != wanted:
            drift.append(f"{field} {state[field]}, not {wanted}")
    return drift


class FilterModule:
    def filters(self):
        return {"file_drift": file_drift}
