# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logic of strata.ops.runner_isolation: dedicate a node to an experiment, and undo it.

``isolated`` checks everything it will touch first (the option values as gitlab-runner and
Kubernetes would; config.toml parses and uses the forms the runner reads; the node carries every
label the runner's node_selector will select; the node and the workloads exist; the runners
exist and the token works), then, under the state file's lock:

1. records what it will change in the 0600 state file (runners' paused flags and fields,
   config.toml bytes and the bytes it will write, the node's taints/labels/cordon, the
   workloads' tolerations and replicas) — once: a second ``isolated`` keeps the first record,
   so ``restored`` always returns to the state before the first run, also after a crash
   anywhere after this step;
2. pauses the runners (``PUT /runners/:id`` with ``paused`` only) and waits until they run no
   job (jobs are never cancelled);
3. edits config.toml (or the Helm chart's ConfigMap); gitlab-runner reloads it by itself and is
   never restarted. The node_selector is replaced, not merged (see runner_config);
4. labels the node, adds the toleration to the workloads and waits until they have rolled out,
   then taints (and cordons) the node — a workload that must stay on the node (a hostPath-bound
   MinIO) tolerates the taint before it exists, and none of its pods is still to be placed
   when the node is cordoned. A toleration changes the pod template, which restarts the pods:
   a workload with an ``exit_command`` is stopped through safe_shutdown's graceful stop first
   (exit command, scale to 0, watch until its pods are gone), then scaled back and watched
   until Ready; the replicas it is brought back to are in the state file while it is down.

``restored`` undoes it in the reverse order: config.toml byte-for-byte (refused, with the diff,
when the file is no longer what ``isolated`` wrote: an edit made meanwhile would be lost), the
node's taint (and cordon) BEFORE the workloads' tolerations, so a pod bound to the node stays
schedulable, then waits until the workloads are Ready again, then the labels, then the runners'
paused flags; then it removes the state file and its lock file. Without a state file there is
nothing to restore (changed=false) and nothing is created.

Kubernetes access goes through the collection's shared client (``k8s/``: ``K8sClient``,
typed ``K8sError``s), graceful stops through ``shutdown.py``; GitLab access through
``gitlab.py``; config.toml edits and checks through ``runner_config.py``; the state file
through ``state.py``.

By concern: ``checks`` (what is checked before anything changes), ``worker`` (RunnerIsolation and
what enter and exit share), ``enter`` (state=isolated), ``exit`` (state=restored).
"""

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

HELM_WARNING = (
    "config.toml was changed in the ConfigMap %s/%s (key %s) that the gitlab-runner Helm chart "
    "renders: a later 'helm upgrade' of that release writes the chart's values back and undoes the "
    "isolation; run the isolation again after it, or put these settings into the chart's values"
)

STATE_OPERATION = "strata.ops.runner_isolation"

# keys of the state file's config record that are not the target's
RECORDED_BYTES = ("content_b64", "sha256", "written_b64")

# options that change the runner config (node_tolerations follows the taint when there is one)
CONFIG_OPTIONS = ("concurrent", "node_selector", "cpu_request", "memory_request", "config_runner_names")


class IsolationError(StrataError):
    """The isolation cannot be done or undone as asked."""
