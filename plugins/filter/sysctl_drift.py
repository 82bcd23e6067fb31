# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.sysctl_drift: the kernel settings whose running value is not the wanted one."""

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: sysctl_drift
short_description: The kernel settings whose running value differs from the wanted one
version_added: "0.2.0"
description:
  - Compares the output of one C(sysctl -n KEY...) call (one line per key, in the order of the keys)
    with the wanted values and returns C(key=running) for each setting that differs.
  - Values are compared as the kernel prints them with runs of white space made one space, so a
    multi-value setting such as C(net.ipv4.tcp_rmem) may be given as C("4096 87380 6291456").
options:
  _input:
    description: The wanted settings, key to value (C(base_system_sysctl)).
    type: dict
    required: true
  running:
    description: The stdout of C(sysctl -n) over the keys of O(_input), in their order.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Settings not in effect
  ansible.builtin.debug:
    msg: "{{ base_system_sysctl | strata.ops.sysctl_drift(running=sysctl_read.stdout) }}"
"""

RETURN = r"""
_value:
  description: C(key=running value) for each setting whose running value differs, in key order.
  type: list
  elements: str
"""


def _normalized(value):
    return " ".join(str(value).split())


def sysctl_drift(wanted, running):
    lines = running.splitlines()
    if len(lines) != len(wanted):
        raise AnsibleFilterError(
            f"sysctl_drift: sysctl printed {len(lines)} values for {len(wanted)} settings "
            f"({', '.join(wanted)}): {running!r}"
        )
    return [
        f"{key}={_normalized(line)}"
        for (key, value), line in zip(wanted.items(), lines)
        if _normalized(line) != _normalized(value)
    ]


class FilterModule:
    def filters(self):
        return {"sysctl_drift": sysctl_drift}
