#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: runner_isolation
short_description: Dedicate a Kubernetes node and the GitLab CI runners to an experiment, and undo it exactly
version_added: "0.1.0"
description:
  - With O(state=isolated) the module first checks everything it will touch (the option values
    as gitlab-runner and Kubernetes would read them, the runner config parses and uses the forms
    gitlab-runner reads, the node carries every label the runner's node selector will select,
    the node and the workloads exist, the runners exist and the token works). Bad input fails
    the task before anything is changed. Then, under an exclusive lock on the state file, it
    records the current state in a C(0600) JSON state file (the runners' paused flags and
    fields, the runner config's bytes and the bytes it will write, the node's taints, labels and
    cordon, the workloads' tolerations and replicas), and only then changes anything.
  - It pauses the named runners (C(PUT /runners/:id) with C(paused) and nothing else; the
    deprecated C(active) is never sent) and waits until they run no job
    (C(GET /runners/:id/jobs?status=running)) or O(job_wait_timeout) passes. Jobs are never
    cancelled.
  - It edits gitlab-runner's C(config.toml) with comments and order kept - C(concurrent),
    C(node_selector) (replaced, see O(node_selector)), C(node_tolerations) in the MAP form the
    Kubernetes executor reads (C([runners.kubernetes.node_tolerations]) with
    C("key=value" = "Effect")), C(cpu_request) and C(memory_request). gitlab-runner reloads the
    file by itself; it is never restarted.
  - It labels the node, adds the toleration of the taint to the named Deployments and
    StatefulSets (their pod templates, so their pods restart), waits until they are Ready
    (O(rollout_timeout)), then taints the node and, with O(cordon=true), cordons it. A workload
    with an C(exit_command) (a validator) is not rolled; it is stopped gracefully first, as
    M(strata.ops.safe_shutdown) does (the exit command, scale to 0, a watch until its pods are
    gone), then given the toleration and scaled back to its replicas. Check mode names the
    workloads whose pods would restart (RV(restarts) and a warning).
  - O(state=restored) puts back what was recorded - the config byte-for-byte, the node's taint
    and cordon BEFORE the workloads' tolerations (a pod bound to the node, such as a hostPath
    MinIO, stays schedulable, and workloads with an C(exit_command) are stopped gracefully again),
    waits until the workloads are Ready, then the labels and the runners' paused flags - and
    removes the state file and its lock file. It works after a crash anywhere in
    O(state=isolated), since the state file is written before the first change. Without a
    state file it changes nothing and creates nothing.
  - When the runner config is no longer what O(state=isolated) wrote (someone edited it
    meanwhile), O(state=restored) fails before restoring anything and shows the change as a
    diff (RV(config_edits)), since writing the recorded bytes back would lose it; see
    O(discard_config_edits).
  - A second O(state=isolated) while isolated keeps the first record (never overwrites it) and
    only makes the changes that are missing; with other settings it fails and asks for
    O(state=restored) first.
  - Rejected when found in the existing config, with the reason - the array-of-tables form
    C([[runners.kubernetes.node_tolerations]]) and a C([runners.kubernetes.resources.requests])
    block, which the executor ignores (its keys are C(cpu_request) and C(memory_request)).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
  - strata.ops.k8s_auth
attributes:
  check_mode:
    support: full
    details:
      - Reads and checks everything and reports what would change, including the workloads whose
        pods would restart (RV(restarts), and a warning); writes no state file, creates no
        directory or lock file, and does not wait for running jobs (it returns them).
  diff_mode:
    support: partial
    details: The runner config's text before and after; not the Kubernetes or GitLab changes.
  platform:
    platforms: posix
options:
  state:
    description: C(isolated) dedicates the node; C(restored) undoes what was recorded.
    type: str
    choices: [isolated, restored]
    default: isolated
  state_path:
    description:
      - The state file (JSON, mode C(0600), written atomically; a C(.lock) file beside it). Its
        directory is created C(0700) when missing. It holds the runner config's bytes, which
        carry the runners' own authentication tokens - keep it on the host that holds the
        config. The GitLab API token is never written to it.
    type: path
    required: true
  gitlab_url:
    description:
      - The GitLab instance, for example C(https://gitlab.example.com) (C(/api/v4) is added).
      - Needed when O(runners) is not empty. O(state=restored) uses the one recorded in the
        state file when it is not given.
    type: str
  gitlab_token:
    description:
      - A personal, group or project access token with the C(api) scope; an administrator's to
        change instance runners. Sent only in the C(PRIVATE-TOKEN) header.
      - Defaults to the environment variable E(GITLAB_TOKEN); otherwise pass it from a vault
        variable.
      - Not logged (C(no_log)).
    type: str
  runners:
    description: IDs of the runners to pause (for example the bare-metal runners 7 to 14).
    type: list
    elements: int
    default: []
  job_wait_timeout:
    description: Seconds to wait for the paused runners' running jobs to finish before failing.
    type: int
    default: 3600
  job_poll_interval:
    description: Seconds between two looks at the running jobs.
    type: float
    default: 10
  gitlab_timeout:
    description:
      - Seconds for each GitLab API request (O(api_timeout) is the Kubernetes API's).
    type: int
    default: 30
  gitlab_max_retries:
    description: How often a GitLab C(429 Too Many Requests) answer is retried (after its C(Retry-After)).
    type: int
    default: 5
  gitlab_max_retry_wait:
    description: The longest GitLab C(Retry-After) honoured, in seconds.
    type: float
    default: 60
  validate_certs:
    description:
      - Verify the GitLab server's TLS certificate. (The Kubernetes API server's is checked
        against the CA of the kubeconfig.)
    type: bool
    default: true
  config_path:
    description:
      - gitlab-runner's C(config.toml) on the host where the module runs (usually
        C(/etc/gitlab-runner/config.toml)).
    type: path
  config_configmap:
    description:
      - Where the runner is installed with the gitlab-runner Helm chart, the ConfigMap that
        holds its config, patched in place. The result warns that a later C(helm upgrade)
        reverts it.
    type: dict
    suboptions:
      namespace:
        description: Namespace of the ConfigMap.
        type: str
        required: true
      name:
        description: Name of the ConfigMap (the chart names it after the release).
        type: str
        required: true
      key:
        description:
          - The data key holding the TOML (the chart keeps the C([[runners]]) part in
            C(config.template.toml)).
        type: str
        default: config.toml
  config_runner_names:
    description:
      - The C([[runners]]) entries (by C(name)) to edit; by default every entry with
        C(executor = "kubernetes").
    type: list
    elements: str
  concurrent:
    description:
      - The global C(concurrent) to set (C(1) runs the experiment's jobs one at a time). A positive
        integer (gitlab-runner does not take C(0) as unlimited).
    type: int
  node_selector:
    description:
      - The C([runners.kubernetes.node_selector]) entries while isolated, label to value. They
        REPLACE the entries there (restored byte-for-byte later), since the executor puts a job pod
        only on a node with every entry, so an old entry would have to be on O(node) too.
      - Defaults to the label C(kubernetes.io/hostname) with the value O(node) when O(node) and a
        runner config (O(config_path) or O(config_configmap)) are given.
      - With O(node), the run fails before any change when O(node) (with O(node_labels) added)
        does not carry every entry.
      - Keys and values must be Kubernetes label keys and values.
      - This and O(concurrent), O(cpu_request), O(memory_request) and O(config_runner_names) need
        a runner config; without one the run fails before any change.
    type: dict
  config_tolerate_taint:
    description:
      - Add the toleration of O(taint) to C([runners.kubernetes.node_tolerations]) (map form), so
        the job pods may run on the dedicated node (when there is a runner config).
    type: bool
    default: true
  cpu_request:
    description:
      - C(cpu_request) of the job pods, a Kubernetes quantity, for example C(2000m) or C(2).
        Checked with the grammar gitlab-runner parses it with (Kubernetes' C(ParseQuantity));
        C(lots) or a negative value fail before any change.
    type: str
  memory_request:
    description:
      - C(memory_request) of the job pods, a Kubernetes quantity, for example C(2Gi) or C(2G)
        (not C(2 GB)).
    type: str
  node:
    description: The Kubernetes node to dedicate to the experiment.
    type: str
  taint:
    description:
      - The taint put on O(node) (and tolerated by the runner's job pods and O(workloads)). Its
        key and value follow the rules of Kubernetes label keys and values.
    type: dict
    default: {key: experiment, value: dedicated, effect: NoSchedule}
    suboptions:
      key:
        description: Taint key.
        type: str
        required: true
      value:
        description: Taint value (empty for a key-only taint, tolerated with operator C(Exists)).
        type: str
        default: ""
      effect:
        description: Taint effect. C(NoExecute) evicts the pods that do not tolerate it.
        type: str
        choices: [NoSchedule, PreferNoSchedule, NoExecute]
        default: NoSchedule
  node_labels:
    description: Labels to set on O(node) (Kubernetes label keys and values).
    type: dict
    default: {}
  cordon:
    description:
      - Also cordon O(node) (C(spec.unschedulable)). A cordoned node takes no new pod at all,
        also not the runner's job pods; use it when the experiment runs outside the scheduler.
    type: bool
    default: false
  workloads:
    description:
      - Deployments and StatefulSets that must keep running on O(node) (for example a MinIO bound
        to it by hostPath); the toleration is added to their pod templates, which restarts their
        pods (and removed again on O(state=restored)).
    type: list
    elements: dict
    default: []
    suboptions:
      kind:
        description: The workload's kind.
        type: str
        choices: [Deployment, StatefulSet]
        default: Deployment
      namespace:
        description: Its namespace.
        type: str
        required: true
      name:
        description: Its name.
        type: str
        required: true
      exit_command:
        description:
          - The workload's graceful exit command as an argument list (no shell), for example
            C([agave-validator, --ledger, /srv/kind/solana/ledger, exit, --force]). When given,
            the restart the toleration change causes goes through the graceful stop of
            M(strata.ops.safe_shutdown) - this command, a scale to 0 and a watch until its pods are
            gone - and the workload is scaled back to its replicas afterwards, instead of being
            rolled.
          - It runs where this module runs (the admin socket must be reachable there), only
            when the workload has replicas. When it fails nothing is scaled and the task fails.
        type: list
        elements: str
      exit_timeout:
        description: Seconds O(workloads[].exit_command) may run (then SIGTERM, SIGKILL 5 s later).
        type: int
        default: 120
  rollout_timeout:
    description:
      - Seconds to wait, after the toleration is added to O(workloads), until each has all its
        replicas updated and ready, before O(node) is tainted and cordoned (a pod still to be
        placed would stay Pending on a cordoned node); and on O(state=restored), after the
        toleration is removed, until they are Ready again. The run fails at the timeout (an
        isolation with the node untouched). C(0) does not wait.
      - Also the timeout of each graceful stop and start (O(workloads[].exit_command)), which
        needs it to be 1 or more.
    type: int
    default: 600
  lock_timeout:
    description: Seconds to wait for another run holding the state file's lock.
    type: float
    default: 30
  discard_config_edits:
    description:
      - For O(state=restored) when the runner config was changed after O(state=isolated) wrote it.
        V(false) fails before anything is restored and shows the change (RV(config_edits)); make
        the change again after the restore, or set V(true) to write the recorded bytes anyway,
        which drops the change (it is shown in a warning and in RV(config_edits)).
    type: bool
    default: false
requirements:
  - tomlkit (to edit the runner config with its comments kept)
notes:
  - The Kubernetes client is built only when the run touches the cluster (a node, workloads or
    a ConfigMap, or their record when restoring); the options O(kubeconfig), O(context) and
    O(api_timeout) are those of the C(group/strata.ops.k8s) action group.
  - Talks to the GitLab and Kubernetes APIs from where it runs. With O(config_configmap) (or no
    runner config) run it on the controller; with O(config_path) it runs on the runner's
    host instead, which then needs the kubeconfig, tomlkit, the kubernetes client and access to
    both APIs.
  - Adding a toleration to a workload's pod template rolls its pods, as any template change does.
  - Restoring removes only the taint, labels and toleration this module added (and puts back
    the cordon flag when it set one); other changes made meanwhile stay.
seealso:
  - name: GitLab runners API
    description: Pause runners and list their jobs.
    link: https://docs.gitlab.com/api/runners/
  - name: Kubernetes executor, node tolerations
    description: The map form of node_tolerations and the cpu_request/memory_request keys.
    link: https://docs.gitlab.com/runner/executors/kubernetes/
"""

EXAMPLES = r"""
- name: Dedicate talos-say-ls6 to the experiment
  strata.ops.runner_isolation:
    state: isolated
    state_path: /var/lib/strata-ops/runner_isolation.json
    gitlab_url: https://gitlab.example.com
    gitlab_token: "{{ vault_gitlab_admin_token }}"
    runners: [7, 8, 9, 10, 11, 12, 13, 14]
    config_configmap: {namespace: gitlab-runner, name: gitlab-runner, key: config.template.toml}
    concurrent: 1
    cpu_request: 2000m
    memory_request: 2Gi
    node: talos-say-ls6
    taint: {key: experiment, value: dedicated, effect: NoSchedule}
    node_labels: {strata.ops/experiment: dedicated}
    workloads:
      - {kind: StatefulSet, namespace: minio, name: minio}
    kubeconfig: "{{ strata_kubeconfig }}"
  delegate_to: localhost

- name: Keep a validator on the node; its restart goes through its graceful exit (runs on the kind host)
  strata.ops.runner_isolation:
    state: isolated
    state_path: /var/lib/strata-ops/validator_isolation.json
    node: kind-control-plane
    workloads:
      - kind: Deployment
        namespace: laconic-solana
        name: solana-validator
        exit_command: [agave-validator, --ledger, /srv/kind/solana/ledger, exit, --force]
    kubeconfig: "{{ strata_kubeconfig }}"

- name: Undo it after the experiment
  strata.ops.runner_isolation:
    state: restored
    state_path: /var/lib/strata-ops/runner_isolation.json
    gitlab_url: https://gitlab.example.com
    gitlab_token: "{{ vault_gitlab_admin_token }}"
    kubeconfig: "{{ strata_kubeconfig }}"
  delegate_to: localhost

- name: Only the node and MinIO (no runners, no runner config); Kubernetes options for the k8s group
  module_defaults:
    group/strata.ops.k8s:
      kubeconfig: "{{ strata_kubeconfig }}"
      api_timeout: 20
  strata.ops.runner_isolation:
    state: isolated
    state_path: /var/lib/strata-ops/node_isolation.json
    node: talos-say-ls6
    workloads:
      - {kind: StatefulSet, namespace: minio, name: minio}
  delegate_to: localhost
"""

RETURN = r"""
state:
  description: The state reached.
  returned: always
  type: str
  sample: isolated
state_path:
  description: The state file.
  returned: always
  type: str
already_isolated:
  description: The state file existed already; its first record was kept.
  returned: when state is isolated
  type: bool
recorded_at:
  description: When the recorded state was taken (UTC).
  returned: when a state was recorded
  type: str
  sample: "2026-02-20T22:14:03Z"
changes:
  description:
    - What was changed (or would be, in check mode), in order. A failed run returns it too, with
      what it did before it failed.
  returned: always
  type: list
  elements: str
  sample: ["recorded the state in /var/lib/strata-ops/runner_isolation.json", "paused runner 7"]
restore_hint:
  description: In a failed result, when the state before the isolation is recorded, how to undo it.
  returned: on failure after the state file was written
  type: str
running_jobs:
  description: Jobs still running on the paused runners (empty after the wait; filled in check mode).
  returned: when state is isolated
  type: list
  elements: dict
runners:
  description: The recorded runners with their paused flag before the isolation.
  returned: when a state was recorded
  type: list
  elements: dict
  sample: [{id: 7, paused_before: false}]
restarts:
  description:
    - The workloads whose pods the toleration change restarted (or would, in check mode), with
      their replicas and how - rolled by the template change, or stopped gracefully through the
      exit command and scaled back. Also in a failed result.
  returned: always
  type: list
  elements: dict
  sample:
    - workload: StatefulSet minio/minio
      replicas: 4
      how: the changed pod template rolls its 4 pod(s) (no exit command given)
config_edits:
  description:
    - A unified diff from what O(state=isolated) wrote to the runner config to what it holds now,
      when it was changed meanwhile. Returned with the failure (or, with
      O(discard_config_edits=true), with the result and a warning).
  returned: when the runner config was changed while isolated
  type: str
graceful_stop:
  description: In a failed result, what the graceful stop or start of a workload reported.
  returned: on failure of a graceful stop or start
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.k8s import K8S_AUTH_ARGSPEC, client_from_module
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.worker import RunnerIsolation


def main():
    argument_spec = dict(K8S_AUTH_ARGSPEC)
    argument_spec.update(
        state=dict(type="str", choices=["isolated", "restored"], default="isolated"),
        state_path=dict(type="path", required=True),
        gitlab_url=dict(type="str"),
        gitlab_token=dict(type="str", no_log=True, fallback=(env_fallback, ["GITLAB_TOKEN"])),
        runners=dict(type="list", elements="int", default=[]),
        job_wait_timeout=dict(type="int", default=3600),
        job_poll_interval=dict(type="float", default=10),
        gitlab_timeout=dict(type="int", default=30),
        gitlab_max_retries=dict(type="int", default=5),
        gitlab_max_retry_wait=dict(type="float", default=60),
        validate_certs=dict(type="bool", default=True),
        config_path=dict(type="path"),
        config_configmap=dict(
            type="dict",
            options=dict(
                namespace=dict(type="str", required=True),
                name=dict(type="str", required=True),
                key=dict(type="str", default="config.toml", no_log=False),
            ),
        ),
        config_runner_names=dict(type="list", elements="str"),
        concurrent=dict(type="int"),
        node_selector=dict(type="dict"),
        config_tolerate_taint=dict(type="bool", default=True),
        cpu_request=dict(type="str"),
        memory_request=dict(type="str"),
        node=dict(type="str"),
        taint=dict(
            type="dict",
            default=dict(key="experiment", value="dedicated", effect="NoSchedule"),
            options=dict(
                key=dict(type="str", required=True, no_log=False),
                value=dict(type="str", default=""),
                effect=dict(
                    type="str",
                    choices=["NoSchedule", "PreferNoSchedule", "NoExecute"],
                    default="NoSchedule",
                ),
            ),
        ),
        node_labels=dict(type="dict", default={}),
        cordon=dict(type="bool", default=False),
        workloads=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                kind=dict(type="str", choices=["Deployment", "StatefulSet"], default="Deployment"),
                namespace=dict(type="str", required=True),
                name=dict(type="str", required=True),
                exit_command=dict(type="list", elements="str"),
                exit_timeout=dict(type="int", default=120),
            ),
        ),
        rollout_timeout=dict(type="int", default=600),
        lock_timeout=dict(type="float", default=30),
        discard_config_edits=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("config_path", "config_configmap")],
        supports_check_mode=True,
    )
    worker = RunnerIsolation(
        module.params,
        module.check_mode,
        diff=module._diff,
        kube=lambda: client_from_module(module),
        run_command=module.run_command,
        warn=module.warn,
    )
    run_module(module, worker.run)


if __name__ == "__main__":
    main()
