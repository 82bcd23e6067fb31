#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: host_info
short_description: Read installed packages, file states and tool versions of a host in one pass
version_added: "0.2.0"
description:
  - Reads, in one module run, what layer 1 converges - which of the wanted packages are not
    installed (from C(dpkg-query)), the type, mode, owner, group and SHA-1 of files, and the
    output of C(TOOL --version) for tools - so a converged host costs one module run, and the
    tasks that write run only where this read shows drift.
  - The SHA-1 is the checksum M(ansible.builtin.copy) compares, so C(content | hash('sha1'))
    tells whether a copy task would change the file.
  - Read-only; never changes anything.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.attributes.read_only
attributes:
  platform:
    support: full
    platforms: linux
    details: I(packages) needs a Debian-family host (C(dpkg-query)).
options:
  packages:
    description:
      - Package names whose absence to report in C(missing_packages).
    type: list
    elements: str
    default: []
  files:
    description:
      - Absolute paths whose state to report in C(files). Symbolic links are reported as links,
        not followed.
    type: list
    elements: path
    default: []
  versions:
    description:
      - Tools to run as C(TOOL --version); a tool not on C(PATH) gets rc 127.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Read what layer 1 converges
  strata.ops.host_info:
    packages: [zfsutils-linux, docker.io, rsync]
    files: [/etc/docker/daemon.json]
    versions: [criu, crit]
  register: host

- name: Write the docker daemon config only when it differs
  ansible.builtin.copy:
    dest: /etc/docker/daemon.json
    content: "{{ wanted }}"
    mode: "0644"
  when: host.files['/etc/docker/daemon.json'].sha1 != (wanted | hash('sha1'))
  vars:
    wanted: '{"log-driver": "journald"}'
"""

RETURN = r"""
missing_packages:
  description: The names of I(packages) that are not installed, in the order given.
  returned: always
  type: list
  elements: str
  sample: [rsync]
files:
  description: One entry per path of I(files).
  returned: always
  type: dict
  sample: {"/etc/docker/daemon.json": {"path": "/etc/docker/daemon.json", "exists": true, "type": "file",
           "mode": "0644", "owner": "root", "group": "root",
           "sha1": "0a4d55a8d778e5022fab701977c5d840bbc486d0"}}
  contains:
    path:
      description: The path.
      type: str
    exists:
      description: Whether anything is at the path.
      type: bool
    type:
      description: C(file), C(directory), C(link) or C(other); null when missing.
      type: str
    mode:
      description: Permission bits as four octal digits; null when missing.
      type: str
    owner:
      description: Owner name (the uid when it has no name); null when missing.
      type: str
    group:
      description: Group name (the gid when it has no name); null when missing.
      type: str
    sha1:
      description: SHA-1 of a regular file's content; null for anything else.
      type: str
versions:
  description: One entry per tool of I(versions), as M(ansible.builtin.command) registers a run.
  returned: always
  type: dict
  sample: {"criu": {"rc": 0, "stdout": "Version: 4.1", "stderr": ""}}
  contains:
    rc:
      description: Exit status; 127 when the tool is not on C(PATH).
      type: int
    stdout:
      description: Its output, stripped.
      type: str
    stderr:
      description: Its error output, stripped.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import host
from ansible_collections.strata.ops.plugins.module_utils.common import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            packages=dict(type="list", elements="str", default=[]),
            files=dict(type="list", elements="path", default=[]),
            versions=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    run_module(
        module,
        lambda: host.read(module.params, module.run_command, module.get_bin_path),
    )


if __name__ == "__main__":
    main()
