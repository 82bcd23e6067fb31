# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Graceful stop, start and node restart of a Kubernetes workload, for strata.ops.safe_shutdown.

The runbook's rule: never restart or kill the kind node container while the workload runs.
So a stop is (optionally) the workload's own exit command on the host, then a scale to 0,
then a WATCH until no pod owned by the workload exists any more; a node restart is refused
while any pod that matters is bound to that node (every pod but those the operator named
restartable, DaemonSet, static and finished pods; a protected workload's pod always matters).

Shape:

* Pure logic, unit tested without a cluster: ``k8s.objects`` (``selector_matches``,
  ``Ownership``: which pods a Deployment or StatefulSet owns, through the ownerReferences
  chain, Deployment -> ReplicaSet -> Pod or StatefulSet -> Pod, with the workload's selector
  as fallback for pods of ReplicaSets created while we wait), ``pods.PodTracker`` (the predicate
  given to ``K8sClient.watch_until``; it records when each pod was first seen, started
  terminating and was gone), ``restart_blockers`` / ``restart_exempt``, ``describe_pods``,
  ``agave_exit_plan`` (the wait flag agave's exit needs by its version).
* ``SafeShutdown(client, params, ...)`` runs one state (``stopped``, ``running``,
  ``node_restarted``, ``exited``: the exit command alone, with no client) and returns the
  module's result (warnings in ``.warnings``); every failure is a StrataError (``K8sError`` from
  the API, ``ShutdownError`` for what is not the API's fault) whose details carry what was done
  so far. ``run()`` is what the module's ``main()`` hands over to.

By concern: ``pods`` (which pods exist, and when each went), ``exit`` (the graceful exit
command), ``node`` (node_restarted), ``worker`` (SafeShutdown and run()).
"""

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

WORKLOAD_KINDS = ("Deployment", "StatefulSet")

# What restartable may name: pods of these owners, or one bare pod.
RESTARTABLE_KINDS = ("Deployment", "StatefulSet", "ReplicaSet", "Job", "Pod")

STATES = ("stopped", "running", "node_restarted", "exited")

DEFAULT_DOCKER_HOST = "unix://" + ctr.DEFAULT_DOCKER_SOCKET


class ShutdownError(StrataError):
    """Something other than the API server stopped the operation (details say what)."""

    error_kind = "shutdown"


class ExitCommandFailed(ShutdownError):
    error_kind = "exit_command"


class RestartRefused(ShutdownError):
    error_kind = "refused"


class NodeContainerError(ShutdownError):
    error_kind = "node_container"
