# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes API access for strata.ops modules, split by concern (after kubernetes.core's
module_utils/k8s, not its code):

* ``library``: the kubernetes Python library, imported once;
* ``errors``: the typed errors (StrataErrors whose kind is the result's ``error``);
* ``x509``: a client certificate's validity, so an expired one is named;
* ``kubeconfig``: ``get_client(kubeconfig, context, api_timeout)`` / ``client_from_module``;
  the kubeconfig is read, never logged or returned;
* ``resources``: kinds and REST paths; ``client``: ``K8sClient`` (plain dicts in and out);
* ``watch``: ``K8sClient.watch_until(kind, predicate, ...)``: list, then watch from the list's
  resourceVersion and return as soon as the PURE predicate holds; re-list on 410 Gone;
  ``K8sTimeout`` at the deadline. No fixed sleeps;
* ``predicates``: those pure predicates; ``objects``: ownership, selectors, taints, timestamps.

This package names the client API callers use (``from ...module_utils import k8s``); the checks
behind cluster_health live in module_utils/health.py.
"""

from ansible_collections.strata.ops.plugins.module_utils.k8s.client import (
    DEFAULT_API_TIMEOUT,
    K8sClient,
    retry_on_conflict,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import (
    K8sApiError,
    K8sArgumentError,
    K8sAuthError,
    K8sConfigError,
    K8sConflict,
    K8sContextError,
    K8sError,
    K8sGone,
    K8sMissingLibrary,
    K8sNotFound,
    K8sTimeout,
    K8sUnreachable,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.kubeconfig import (
    DEFAULT_KUBECONFIG,
    check_api_timeout,
    client_from_module,
    get_client,
    kubeconfig_path,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.library import HAS_K8S, missing_library_message
from ansible_collections.strata.ops.plugins.module_utils.k8s.predicates import (
    all_items,
    condition,
    is_true,
    named_ready,
    no_items,
    node_is_ready,
    pod_is_ready,
    rollout_brief,
    workload_is_ready,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import (
    PATCH_TYPES,
    RESOURCES,
    SCALABLE,
    object_key,
    object_ref,
    resource_path,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.x509 import (
    certificate_problem,
    certificate_validity,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s_options import K8S_AUTH_ARGSPEC

__all__ = [
    "DEFAULT_API_TIMEOUT",
    "DEFAULT_KUBECONFIG",
    "HAS_K8S",
    "K8S_AUTH_ARGSPEC",
    "PATCH_TYPES",
    "RESOURCES",
    "SCALABLE",
    "K8sApiError",
    "K8sArgumentError",
    "K8sAuthError",
    "K8sClient",
    "K8sConfigError",
    "K8sConflict",
    "K8sContextError",
    "K8sError",
    "K8sGone",
    "K8sMissingLibrary",
    "K8sNotFound",
    "K8sTimeout",
    "K8sUnreachable",
    "all_items",
    "certificate_problem",
    "certificate_validity",
    "check_api_timeout",
    "client_from_module",
    "condition",
    "get_client",
    "is_true",
    "kubeconfig_path",
    "missing_library_message",
    "named_ready",
    "no_items",
    "node_is_ready",
    "object_key",
    "object_ref",
    "pod_is_ready",
    "resource_path",
    "retry_on_conflict",
    "rollout_brief",
    "workload_is_ready",
]
