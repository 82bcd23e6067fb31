#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: safe_shutdown
short_description: Stop a Kubernetes workload and wait until its pods are gone; restart a kind node safely
version_added: "0.1.0"
description:
  - 'The shutdown order of the kind validator runbook as one module: never restart or kill the
    kind node container while the workload runs (io_uring against ZFS can leave unkillable
    D-state threads); stop the workload with its own exit command or by scaling it to 0 and
    waiting until its pods are gone; only then restart the node.'
  - O(state=stopped) - optionally runs the workload's graceful exit command on the host first
    (O(exit_command), for example C(agave-validator --ledger /srv/kind/solana/ledger exit --force)
    against the admin socket under the workload's host path), then scales the Deployment or
    StatefulSet to 0 and WATCHES its pods (a Kubernetes watch started from the list's
    resourceVersion, no fixed sleeps) until no pod owned by the workload exists any more.
    Ownership follows the ownerReferences chain (Deployment -> ReplicaSet -> Pod, StatefulSet
    -> Pod), with the workload's selector as fallback for pods of ReplicaSets created during
    the wait. Returns each pod seen with its node and termination time.
  - On timeout it fails naming the pods still present and touches nothing else (no node
    restart, no rescale). An API server that becomes unreachable fails the task; nothing is
    ever restarted by O(state=stopped).
  - O(state=running) - scales to O(replicas) and waits (with watches) until the workload is
    ready and that many pods owned by it are Ready.
  - O(state=node_restarted) - restarts the Docker container of a kind node (Docker Engine API on
    the local socket) only when no pod that matters is bound to the node (by C(spec.nodeName),
    not by labels). Every pod there matters unless a O(restartable) entry names it or its
    workload, or it is a DaemonSet pod, a static (mirror) pod or a finished pod (the pods
    C(kubectl drain) leaves alone); a pod of a O(protected) workload always matters. Otherwise it
    refuses, naming the pods. O(force) restarts anyway (check mode says exactly which pods it
    would break, and which go down with the node). After the restart it waits until the
    container runs again and, with O(wait_node_ready), until the node's kubelet has renewed its
    Lease and the node is Ready.
  - O(state=exited) - only the graceful exit - runs O(exit_command) on the machine the task runs
    on (the workload host, where the admin socket is) with the same deadline, SIGTERM and SIGKILL
    as O(state=stopped), and returns; it needs no kubeconfig and changes nothing in the cluster.
    The flows run it on the workload host, then O(state=stopped) on the controller.
  - 'For C(agave-validator ... exit) (or C(solana-validator)) the module reads C(--version) first:
    agave before 3.0 returns right after the exit request unless given C(--wait-for-exit), so the
    module adds it; 3.0 and later wait by default (C(--wait-for-exit) is left out there: deprecated
    in 3.0, refused by 4.x). A wait choice already in the command is kept. RV(exit_command.wait)
    says which way ran.'
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.k8s_auth
attributes:
  check_mode:
    support: full
    details: Reads the workload, its pods and (for a restart) the pods on the node and the
      container, and reports what would be done; runs no exit command (only C(agave-validator
      --version)), scales nothing, restarts nothing.
  diff_mode:
    support: full
    details: C(replicas) before and after for O(state=stopped) and O(state=running); the node
      container's C(StartedAt) for O(state=node_restarted).
  platform:
    support: full
    platforms: posix
    details: The Kubernetes API is reached from where the task runs; O(exit_command) runs and the
      Docker socket is used on that same machine. O(state=exited) does not use the API.
options:
  state:
    description:
      - V(stopped) - exit command (optional), scale to 0, wait until no pod of the workload exists.
      - V(running) - scale to O(replicas) and wait until they are Ready.
      - V(node_restarted) - restart the kind node container, refused while a pod that matters runs on it.
      - V(exited) - run O(exit_command) here and nothing else (on the workload host).
    type: str
    required: true
    choices: [stopped, running, node_restarted, exited]
  kind:
    description:
      - Kind of the workload. An unknown kind is refused by the argument check; a workload that
        does not exist fails the task with the workloads of that kind in the namespace.
    type: str
    choices: [Deployment, StatefulSet]
    default: Deployment
  name:
    description:
      - Name of the workload. Required for O(state=stopped) and O(state=running).
    type: str
  namespace:
    description:
      - Namespace of the workload (and default namespace of the O(protected) entries).
    type: str
    default: default
  replicas:
    description:
      - Replicas for O(state=running) (1 or more).
    type: int
    default: 1
  timeout:
    description:
      - Seconds to wait for the pods to go (V(stopped)), to be Ready (V(running)), or for the node
        container and node to be back (V(node_restarted)). The exit command has its own
        O(exit_timeout).
    type: int
    default: 300
  exit_command:
    description:
      - Graceful exit command run before scaling to 0 (O(state=stopped)) or alone
        (O(state=exited), where it is required), as an argument list (no shell), for example
        C([agave-validator, --ledger, /srv/kind/solana/ledger, exit, --force]), which talks to the
        validator's admin socket under its ledger directory and waits for it to exit (the wait
        flag is added for agave before 3.0, see above).
      - With O(state=stopped) it runs only when the workload has replicas (not when it is
        stopped already); never in check mode.
      - When it fails (non-zero exit, not found) or outlives O(exit_timeout) the task fails and
        nothing is scaled, unless O(exit_failure_ok=true).
    type: list
    elements: str
  exit_timeout:
    description:
      - Seconds the exit command may run; then it gets SIGTERM (SIGKILL 5 s later) and counts as failed.
    type: int
    default: 120
  exit_failure_ok:
    description:
      - Scale to 0 and wait even when the exit command failed or timed out (the failure is still
        reported in RV(exit_command)).
    type: bool
    default: false
  exit_in:
    description:
      - Where O(exit_command) runs. V(host) runs it on the machine the task runs on (against the
        admin socket under the workload's host path); run the task there, with O(state=exited)
        when the Kubernetes API is reached from the controller.
      - V(pod) (exec in the workload's container through the pods/exec API, for clusters with a real
        kubelet) is not supported yet and fails with a hint before anything runs.
    type: str
    choices: [host, pod]
    default: host
  node:
    description:
      - Name of the Kubernetes node to restart (O(state=node_restarted)). An unknown node fails
        the task with the list of nodes.
    type: str
  node_container:
    description:
      - Docker container of the kind node (kind names it C(<cluster>-control-plane)). Defaults to O(node).
    type: str
  docker_host:
    description:
      - Docker Engine API socket of the node container's host. Only local C(unix://) sockets.
    type: str
    default: unix:///var/run/docker.sock
  node_stop_timeout:
    description:
      - Seconds Docker gives the node container to stop (its stop signal) before it kills it.
    type: int
    default: 30
  wait_node_ready:
    description:
      - After the restart, wait until the node's Lease (C(kube-node-lease)) was renewed after the
        container started again and the node is Ready.
    type: bool
    default: true
  protected:
    description:
      - Workloads that must not run on the node during a restart, even when O(restartable) names
        them. The restart is refused while any pod owned by one of them is bound to O(node)
        (C(spec.nodeName)), Terminating pods included. A protected workload that does not exist
        fails the task.
    type: list
    elements: dict
    default: []
    suboptions:
      kind:
        description: Kind of the workload.
        type: str
        choices: [Deployment, StatefulSet]
        default: Deployment
      name:
        description: Its name.
        type: str
        required: true
      namespace:
        description: Its namespace; O(namespace) when omitted.
        type: str
  restartable:
    description:
      - The operator's opt-out for O(state=node_restarted) - workloads (or single pods, kind
        V(Pod)) whose pods may go down with the node. Any other pod bound to the node refuses the
        restart, except DaemonSet pods, static pods and finished pods.
      - A named workload that does not exist fails the task, listing those that do.
    type: list
    elements: dict
    default: []
    suboptions:
      kind:
        description: Kind of the workload, or V(Pod) for one bare pod.
        type: str
        choices: [Deployment, StatefulSet, ReplicaSet, Job, Pod]
        default: Deployment
      name:
        description: Its name.
        type: str
        required: true
      namespace:
        description: Its namespace; O(namespace) when omitted.
        type: str
  force:
    description:
      - Restart the node even though pods that matter are bound to it (a warning names them). In
        check mode the result names exactly the pods it would break.
    type: bool
    default: false
notes:
  - 'Where it runs: the Kubernetes API is called from the machine the task runs on, and
    O(exit_command) and the Docker socket are local to it. Run O(state=exited) on the workload
    host (where the admin socket is), then O(state=stopped) and O(state=running) on the
    controller (C(delegate_to: localhost)), as roles/workload_deploy does. O(state=node_restarted),
    or O(state=stopped) with O(exit_command), runs on the host of the kind node (where the admin
    socket and the Docker socket are), with a kubeconfig there.'
  - Safe to run again - a stopped workload with no pod left reports C(changed=false); a timed-out
    stop can simply be run again with a larger O(timeout).
seealso:
  - module: kubernetes.core.k8s_scale
  - module: kubernetes.core.k8s_exec
  - module: strata.ops.cluster_health
"""

EXAMPLES = r"""
- name: Stop the validator gracefully and wait until its pod is gone
  strata.ops.safe_shutdown:
    kubeconfig: "{{ strata_kubeconfig }}"
    state: stopped
    kind: Deployment
    name: laconic-70ce4c4b47e23b85-deployment
    namespace: laconic-laconic-70ce4c4b47e23b85
    timeout: 300
  delegate_to: localhost
  register: stop

- name: Show how long each pod took to terminate
  ansible.builtin.debug:
    msg: "{{ stop.pods | map(attribute='termination_seconds') | list }}"
  delegate_to: localhost

# On the kind host itself: the admin socket (under the ledger) and the Docker socket are there.
- name: Exit through the admin socket first, then scale to 0 and wait
  strata.ops.safe_shutdown:
    kubeconfig: /home/rix/.kube/config
    state: stopped
    name: laconic-70ce4c4b47e23b85-deployment
    namespace: laconic-laconic-70ce4c4b47e23b85
    exit_command: [agave-validator, --ledger, /srv/kind/solana/ledger, exit, --force]
    exit_timeout: 180

# The flows' way: the exit on the workload host (admin socket), the scale on the controller.
- name: Graceful exit through the admin socket on the kind host (agave before 3.0 gets --wait-for-exit)
  strata.ops.safe_shutdown:
    state: exited
    exit_command: [agave-validator, --ledger, /srv/kind/solana/ledger, exit, --force]
    exit_timeout: 180
  register: exit_run

- name: Restart the kind node, refused while the validator (or any pod not named) is bound to it
  strata.ops.safe_shutdown:
    kubeconfig: /home/rix/.kube/config
    state: node_restarted
    node: laconic-70ce4c4b47e23b85-control-plane
    namespace: laconic-laconic-70ce4c4b47e23b85
    protected:
      - kind: Deployment
        name: laconic-70ce4c4b47e23b85-deployment
    # kind's own pods, which may go down with its node
    restartable:
      - {namespace: kube-system, name: coredns}
      - {namespace: local-path-storage, name: local-path-provisioner}

- name: What a forced restart would break (check mode changes nothing)
  strata.ops.safe_shutdown:
    kubeconfig: /home/rix/.kube/config
    state: node_restarted
    node: laconic-70ce4c4b47e23b85-control-plane
    namespace: laconic-laconic-70ce4c4b47e23b85
    protected: [{name: laconic-70ce4c4b47e23b85-deployment}]
    force: true
  check_mode: true
  register: would_break

- name: Scale back to one replica and wait until it is Ready
  strata.ops.safe_shutdown:
    kubeconfig: "{{ strata_kubeconfig }}"
    state: running
    name: laconic-70ce4c4b47e23b85-deployment
    namespace: laconic-laconic-70ce4c4b47e23b85
    replicas: 1
    timeout: 600
  delegate_to: localhost

- name: Every k8s option once for the play (action group strata.ops.k8s)
  module_defaults:
    group/strata.ops.k8s:
      kubeconfig: "{{ strata_kubeconfig }}"
  block:
    - name: Stop a StatefulSet
      strata.ops.safe_shutdown:
        state: stopped
        kind: StatefulSet
        name: indexer
        namespace: data
      delegate_to: localhost
"""

RETURN = r"""
msg:
  description: What was done (or, in check mode, would be done), in words.
  returned: success
  type: str
  sample: "Deployment ns/web stopped: 2 pod(s) gone, scaled from 2 to 0"
state:
  description: The state asked for.
  returned: always
  type: str
kind:
  description: Kind of the workload.
  returned: state is stopped or running
  type: str
name:
  description: Name of the workload.
  returned: state is stopped or running
  type: str
namespace:
  description: Namespace of the workload.
  returned: state is stopped or running
  type: str
replicas_before:
  description: C(spec.replicas) before the task.
  returned: state is stopped or running
  type: int
  sample: 1
replicas_after:
  description: C(spec.replicas) after the task (also in check mode, what it would be).
  returned: state is stopped or running
  type: int
  sample: 0
diff:
  description: Before and after (also without C(--diff)); see the diff_mode attribute.
  returned: state is not exited
  type: dict
  sample: {"before": {"replicas": 1}, "after": {"replicas": 0}}
pods:
  description:
    - For V(stopped), every pod of the workload seen while stopping, in the order first seen.
    - For V(running), the Ready pods (name, namespace, node, phase, ready, deletion_timestamp).
  returned: state is stopped or running
  type: list
  elements: dict
  contains:
    name:
      description: Pod name.
      type: str
    namespace:
      description: Pod namespace.
      type: str
    node:
      description: The node it was bound to (C(spec.nodeName)).
      type: str
    first_seen:
      description: When the module first saw it (UTC).
      type: str
      sample: "2026-11-30T10:00:00.120Z"
    deletion_timestamp:
      description: Its C(metadata.deletionTimestamp) (the end of its grace period).
      type: str
    gone_at:
      description: When its DELETED event was seen (UTC); null when it is still present.
      type: str
    termination_seconds:
      description: Seconds from when it was seen terminating (or from the scale to 0) to its
        DELETED event.
      type: float
      sample: 3.02
    restarts:
      description:
        - How often the kubelet had restarted its containers (the sum of their C(restartCount), the
          highest seen). A real kubelet runs a container again after the graceful exit command
          (restartPolicy Always) until the scale-down removes the pod; the message names such pods.
      type: int
      sample: 1
elapsed:
  description: Seconds the module ran.
  returned: success
  type: float
wait_seconds:
  description: Seconds spent watching for the pods to go.
  returned: state is stopped
  type: float
watch_events:
  description: Watch events received while waiting.
  returned: state is stopped
  type: int
last_pod_gone_to_return:
  description: Seconds from the DELETED event of the last pod to the module's return; null when
    no pod went while it watched.
  returned: state is stopped
  type: float
  sample: 0.004
scaled_at:
  description: When the scale to 0 was sent (UTC); null when it was at 0 already.
  returned: state is stopped
  type: str
exit_command:
  description: The exit command's run; null when it did not run (and in check mode).
  returned: state is stopped or exited
  type: dict
  contains:
    argv:
      description: The command as it ran (with C(--wait-for-exit) added for agave before 3.0).
      type: list
      elements: str
    agave_version:
      description: The agave version C(--version) printed; null when the command is not an
        agave exit or the version is unknown.
      type: str
      sample: 2.2.14
    wait:
      description: How the command waits for the process to exit.
      type: str
      sample: "agave 2.2.14 before 3.0: --wait-for-exit added, without it exit returns before the
        validator process has exited"
    rc:
      description: Its exit status (null when it could not start).
      type: int
    stdout:
      description: Its standard output.
      type: str
    stderr:
      description: Its standard error.
      type: str
    ok:
      description: True when it exited 0 within O(exit_timeout).
      type: bool
    timed_out:
      description: True when it was killed at O(exit_timeout).
      type: bool
    elapsed:
      description: Seconds it ran.
      type: float
    started_at:
      description: When it started (UTC).
      type: str
    finished_at:
      description: When it ended (UTC).
      type: str
    error:
      description: Why it counts as failed.
      type: str
ready_replicas:
  description: Ready replicas reached.
  returned: state is running and not check mode
  type: int
still_present:
  description: Pods still present when the wait ended in failure (same fields as RV(pods)).
  returned: failed while waiting for pods to go
  type: list
  elements: dict
node:
  description: The node.
  returned: state is node_restarted
  type: str
node_container:
  description: The node's Docker container.
  returned: state is node_restarted
  type: str
protected:
  description: The protected workloads checked (C(Kind namespace/name)).
  returned: state is node_restarted
  type: list
  elements: str
restartable:
  description: The O(restartable) entries (C(Kind namespace/name)).
  returned: state is node_restarted
  type: list
  elements: str
pods_on_node:
  description: Every pod bound to the node before the restart (any workload).
  returned: state is node_restarted
  type: list
  elements: dict
blockers:
  description: Pods that matter bound to the node, with C(workload) (its owner) and C(why)
    (V(protected) or V(not restartable)); what a forced restart breaks.
  returned: state is node_restarted
  type: list
  elements: dict
going_down:
  description: Pods bound to the node that go down with it, with C(workload) and C(why)
    (V(restartable), V(DaemonSet pod), V(static pod), or finished).
  returned: state is node_restarted
  type: list
  elements: dict
forced:
  description: True when the restart went ahead (or would, in check mode) despite blockers.
  returned: state is node_restarted
  type: bool
started_at_before:
  description: The container's C(State.StartedAt) before.
  returned: state is node_restarted
  type: str
started_at_after:
  description: Its C(State.StartedAt) after the restart; null in check mode.
  returned: state is node_restarted
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.k8s import K8S_AUTH_ARGSPEC, client_from_module
from ansible_collections.strata.ops.plugins.module_utils.shutdown import (
    DEFAULT_DOCKER_HOST,
    RESTARTABLE_KINDS,
    STATES,
    WORKLOAD_KINDS,
    worker,
)


def main():
    argument_spec = dict(K8S_AUTH_ARGSPEC)
    argument_spec.update(
        state=dict(type="str", required=True, choices=list(STATES)),
        kind=dict(type="str", choices=list(WORKLOAD_KINDS), default="Deployment"),
        name=dict(type="str"),
        namespace=dict(type="str", default="default"),
        replicas=dict(type="int", default=1),
        timeout=dict(type="int", default=300),
        exit_command=dict(type="list", elements="str"),
        exit_timeout=dict(type="int", default=120),
        exit_failure_ok=dict(type="bool", default=False),
        exit_in=dict(type="str", choices=["host", "pod"], default="host"),
        node=dict(type="str"),
        node_container=dict(type="str"),
        docker_host=dict(type="str", default=DEFAULT_DOCKER_HOST),
        node_stop_timeout=dict(type="int", default=30),
        wait_node_ready=dict(type="bool", default=True),
        protected=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                kind=dict(type="str", choices=list(WORKLOAD_KINDS), default="Deployment"),
                name=dict(type="str", required=True),
                namespace=dict(type="str"),
            ),
        ),
        restartable=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                kind=dict(type="str", choices=list(RESTARTABLE_KINDS), default="Deployment"),
                name=dict(type="str", required=True),
                namespace=dict(type="str"),
            ),
        ),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[
            ("state", "stopped", ("name",)),
            ("state", "running", ("name",)),
            ("state", "node_restarted", ("node",)),
            ("state", "exited", ("exit_command",)),
        ],
        supports_check_mode=True,
    )
    run_module(
        module,
        lambda: worker.run(
            module.params, module.check_mode, module.run_command, lambda: client_from_module(module)
        ),
    )


if __name__ == "__main__":
    main()
