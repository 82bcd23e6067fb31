#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: data_transfer
short_description: Copy a tree to another host over ssh in parallel streams, resumable, bandwidth-limited
version_added: "0.2.0"
description:
  - Runs on the source host and copies the tree O(src_path) to O(dest_host):O(dest_path) over ssh in
    O(streams) parallel streams, each its own TCP connection. One ssh stream is capped at about its window
    per round trip on a long link; N streams scale until the disk, the CPU or the link is the limit.
  - "What to send is what C(rsync -aH --dry-run) lists (rsync's quick check: size and mtime). Small files
    are grouped into streams balanced by bytes (longest first, as fpart does for fpsync; the names of a
    hard-linked file always together) and each group is sent by one C(rsync -aHS --files-from), which
    keeps attributes, symlinks, hard links, sparse files and partial files. Files of O(large_file_min) or
    more (without hard links) are cut into O(chunk_size) byte ranges; each stream sends its ranges to a
    few lines of Python at the destination that write them in place (only the data of a sparse file: its
    holes stay holes) and record how much of each range is written. A stream with nothing left takes
    ranges from the one with the most left, so all streams end together."
  - "Each stream's rsync and range receiver share the stream's one ssh connection (an ssh ControlMaster
    of its own, in a private directory). At most 8 connections are set up at once: sshd's MaxStartups
    (default 10:30:100) drops unauthenticated connections beyond 10."
  - "Resume: rerun the same task after any interruption (C(kill -9), a lost link, a reboot). Finished
    files are not sent again (rsync's quick check), a file rsync was sending continues from its partial
    copy, and a range continues from the byte its marker records. A stream whose connection fails is
    retried after O(retry_delay) (doubling, O(retries) times) while the others go on."
  - A large file gets the source's mode and mtime before it is moved into place, once all its ranges are
    written; rsync then sets owners, and the attributes of directories and of files whose contents did
    not change.
  - While it runs, a progress file (JSON - bytes done, rate, ETA, every stream's state) is rewritten every
    second on the source host; the action plugin shows it in the task output while the task runs.
  - "Refuses before sending anything: a missing O(src_path), a destination that cannot be reached, less
    free space at the destination than the copy needs (with both numbers), and files at the destination
    that differ from the source (they would be overwritten) unless O(existing) says what to do."
  - "Nothing is deleted at the destination unless O(delete_extra=true) and a check-mode run of the same
    task listed the extra files first (in RV(extras)); a real run deletes only what that run listed."
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Reaches the destination and lists what would be sent, the conflicts and the extra files; sends
      nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
    support: full
requirements:
  - rsync and ssh on this host; rsync, python3 and an ssh server on the destination.
options:
  src_path:
    description: The tree's root on this (the source) host.
    type: path
    required: true
  dest_host:
    description: The destination's host name or address, as this host reaches it over ssh.
    type: str
    required: true
  dest_path:
    description: Where the tree goes on the destination (absolute); created when missing.
    type: str
    required: true
  dest_user:
    description: The ssh user at the destination (default - ssh's own, the current user or ssh_config).
    type: str
  dest_port:
    description: The destination's ssh port.
    type: int
    default: 22
  ssh_identity_file:
    description: The private key this host logs in with (C(ssh -i)).
    type: path
  ssh_options:
    description:
      - More ssh options (C(-o) each), for example C(StrictHostKeyChecking=accept-new) or a C(Ciphers)
        choice.
      - Not C(ControlMaster), C(ControlPath) or C(ControlPersist) (refused) - the module keeps one connection
        per stream itself; a shared one would put all streams into one TCP connection.
    type: list
    elements: str
    default: []
  connect_timeout:
    description: Seconds to wait for an ssh connection (C(ConnectTimeout)).
    type: int
    default: 10
  streams:
    description: Streams (ssh connections) in parallel.
    type: int
    default: 8
  bwlimit:
    description:
      - The most bytes per second all streams together send (C(80M) is 80 MiB/s); C(0) for no limit.
        Each stream gets an equal share for the whole run.
    type: str
    default: "0"
  chunk_size:
    description: The byte range a large file is cut into (at least 1M); also the most a range resends after
      a crash of the destination itself.
    type: str
    default: 64M
  large_file_min:
    description: Files of this size or more are sent in ranges over several streams; smaller ones by rsync.
    type: str
    default: 256M
  existing:
    description:
      - What to do with files at the destination that differ from the source by size or mtime.
      - C(fail) refuses before sending anything and names them; C(update) keeps those newer at the
        destination (C(rsync --update)); C(overwrite) replaces them.
    type: str
    choices: [fail, update, overwrite]
    default: fail
  delete_extra:
    description:
      - Delete files at the destination that the source does not have, but only those a check-mode run of
        the same task listed first, and only once the copy is complete. Not with O(part_count) above 1.
    type: bool
    default: false
  retries:
    description: Attempts after the first for a stream whose connection failed.
    type: int
    default: 5
  retry_delay:
    description: Seconds before the first retry; each next one waits twice as long (at most 60).
    type: int
    default: 5
  state_dir:
    description: Where this host keeps the streams' file lists, the progress file and the check-mode delete
      list (0700).
    type: path
    default: /var/lib/strata-ops/transfer
  progress_file:
    description: The progress file (default - C(progress.json) in this copy's directory under O(state_dir)).
    type: path
  part_index:
    description:
      - With O(part_count) - which part of the tree this host sends, when several source hosts see the same
        tree (a shared mount). Each part is a share of the files balanced by bytes, the same on every host.
    type: int
    default: 0
  part_count:
    description: How many source hosts share the tree (see O(part_index)).
    type: int
    default: 1
notes:
  - Verify the copy with P(strata.ops.tree_manifest#module) on each side (role C(strata.ops.data_transfer),
    entry point C(verify)); a file changed at the source during the copy shows there as differing.
  - The ranges of large files are kept in C(.strata-transfer/) and rsync's partial files in
    C(.strata-partial/) at the destination until they are complete.
"""

EXAMPLES = r"""
- name: Copy the data set to the other cloud, 16 streams, at most 200 MiB/s
  strata.ops.data_transfer:
    src_path: /srv/dataset
    dest_host: dst1.example.org
    dest_path: /srv/dataset
    streams: 16
    bwlimit: 200M
    ssh_options: [StrictHostKeyChecking=accept-new]

- name: List what a mirror would delete there (check mode), then run it for real
  strata.ops.data_transfer:
    src_path: /srv/dataset
    dest_host: dst1.example.org
    dest_path: /srv/dataset
    delete_extra: true
  check_mode: true
  register: listed
"""

RETURN = r"""
source:
  description: The source tree on this host.
  returned: always
  type: str
destination:
  description: C(user@host:path) of the copy.
  returned: always
  type: str
plan:
  description: What was (in check mode - would be) sent - C(bytes) (data, each hard-linked file once),
    C(files), C(streams), C(large_files), C(directories).
  returned: always
  type: dict
conflicts:
  description: Files at the destination that differed from the source (sent only with O(existing) update
    or overwrite).
  returned: always
  type: list
  elements: str
extras:
  description: Files at the destination the source does not have.
  returned: always
  type: list
  elements: str
deleted:
  description: The extra files deleted (O(delete_extra)).
  returned: always
  type: list
  elements: str
unreadable:
  description: Source files that could not be read, with the reason (the task fails; everything else is sent).
  returned: always
  type: dict
bytes_sent:
  description: Bytes sent this run.
  returned: when something was sent
  type: int
elapsed_s:
  description: Seconds the streams ran.
  returned: when something was sent
  type: float
rate_bytes_s:
  description: The average rate of this run.
  returned: when something was sent
  type: int
streams:
  description: Every stream - C(index), C(state), C(bytes_total), C(bytes_done), C(retries), C(error).
  returned: when something was sent
  type: list
  elements: dict
progress_file:
  description: The progress file this run wrote.
  returned: when something was sent
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.tree_copy.job import ARGUMENT_SPEC, run


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run_module(module, lambda: run(module.params, module.check_mode))


if __name__ == "__main__":
    main()
