#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: run_lock
short_description: One changing strata.ops run at a time on a host; another waits or fails naming it
version_added: "0.2.0"
description:
  - Takes (O(state=present)) or releases (O(state=absent)) a named run lock on the host, a JSON file
    (mode 0600) in O(lock_dir) naming its holder - the controller, the ansible-playbook process, the
    play, the user and when it was taken. Every changing playbook of the collection takes
    C(strata-ops) on its hosts first and releases it last, so two runs of a layer or a flow never
    interleave their changes on one host.
  - A lock held by another run is waited for, up to O(timeout) seconds; then the task fails naming that
    run and how to end it. A lock of this controller whose ansible-playbook process is gone (killed,
    or failed before its release) is stale and is taken over (result C(took_over)). A lock of another
    controller is never taken over unless O(force=true).
  - The plays of one ansible-playbook run share the lock (site.yml's layers take it once per host).
  - The work runs in the action plugin (on the controller, where the ansible-playbook process is
    known) and in this module on the host (the lock file itself).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Waits for another run's lock as a real run would (a check beside a changing run reads
      half-made changes), but takes, releases and breaks nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
    support: full
options:
  name:
    description:
      - The lock's name; runs that must not overlap use the same.
      - Several names are taken and released together, all or none (site.yml holds C(strata-ops) and
        the workload's lock with one task).
    type: list
    elements: str
    default: [strata-ops]
  state:
    description: C(present) takes the lock (waiting for it), C(absent) releases this run's lock.
    type: str
    choices: [present, absent]
    default: present
  lock_dir:
    description:
      - Where lock files live on the host. Default C(/run/strata-ops/locks) when the task runs as root
        (the playbooks become root); for another user (an execution environment runs as uid 1000)
        C(/run/user/UID/strata-ops/locks), or C(/tmp/strata-ops-UID/locks) where that runtime directory
        does not exist. A reboot ends them all.
      - The directory must belong to the user the task runs as (one another user made is refused).
    type: path
  timeout:
    description: Seconds to wait for another run's lock; 0 fails at once when it is held.
    type: int
    default: 600
  poll:
    description: Seconds between two looks at a held lock.
    type: int
    default: 2
  force:
    description:
      - Take the lock even when another run holds it - only when that run is known to be gone (its
        controller crashed or its AWX job was cancelled); the run it names may still be changing the
        host otherwise. The task warns which holder it removed.
    type: bool
    default: false
  holder:
    description: Set by the action plugin (this run's identity); not for playbooks.
    type: dict
  break_token:
    description: Set by the action plugin (the stale or forced holder to remove first); not for playbooks.
    type: str
notes:
  - Read-only playbooks (health_check.yml) take no lock.
"""

EXAMPLES = r"""
- name: One changing run at a time on this host
  strata.ops.run_lock:
    timeout: 600

- name: Release it at the end of the play
  strata.ops.run_lock:
    state: absent

- name: The host's lock and a workload's, together (all or none)
  strata.ops.run_lock:
    name: [strata-ops, workload-validator-solana]
"""

RETURN = r"""
taken:
  description: Whether this run holds the lock now (for O(state=absent), whether it did and released it).
  returned: always
  type: bool
holder:
  description:
    - The holder - C(token), C(host) (the controller), C(boot_id), C(pid), C(start_time), C(play), C(user),
      C(started) - this run
      for O(state=present), the lock's holder when it is another run's.
  returned: when the lock is held
  type: dict
lock_file:
  description: The lock file of another run that is in the way, else the first of O(name)'s.
  returned: always
  type: str
lock_files:
  description: The lock files of O(name).
  returned: always
  type: list
  elements: str
state:
  description: The O(state) asked for (a log of a run shows which lock task took and which released).
  returned: always
  type: str
  sample: present
took_over:
  description:
    - The lock this run removed before taking it - a stale one of this controller (its ansible-playbook
      process is gone - that run failed or was killed) or, with O(force=true), another run's (also a warning).
  returned: when a lock was removed
  type: str
waited_s:
  description: Seconds this run waited for another run's lock (action plugin).
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import run_lock
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, run_module

ARGUMENT_SPEC = dict(
    name=dict(type="list", elements="str", default=["strata-ops"]),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    lock_dir=dict(type="path"),
    timeout=dict(type="int", default=600),
    poll=dict(type="int", default=2),
    force=dict(type="bool", default=False),
    holder=dict(type="dict"),
    break_token=dict(type="str", no_log=False),  # a holder id, not a secret
)


def run(params, check_mode):
    holder = params["holder"]
    if not holder or not holder.get("token"):
        raise InvalidArgument("holder is missing: strata.ops.run_lock runs through its action plugin")
    params = dict(params, lock_dir=params["lock_dir"] or run_lock.default_lock_dir())
    if not params["name"]:
        raise InvalidArgument("name is empty: give the lock's name (or several), e.g. strata-ops")
    paths = [run_lock.lock_path(params["lock_dir"], name) for name in params["name"]]
    result = {"changed": False, "lock_file": paths[0], "lock_files": paths}
    if params["break_token"]:
        run_lock.remove(params["lock_dir"], params["name"], params["break_token"], check_mode)
    if params["state"] == "absent":
        released, found = run_lock.remove(params["lock_dir"], params["name"], holder["token"], check_mode)
        return dict(result, taken=released, holder=found)
    taken, current, in_the_way = run_lock.acquire(params["lock_dir"], params["name"], holder, check_mode)
    return dict(result, taken=taken, holder=current, lock_file=in_the_way or paths[0])


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run_module(module, lambda: run(module.params, module.check_mode))


if __name__ == "__main__":
    main()
