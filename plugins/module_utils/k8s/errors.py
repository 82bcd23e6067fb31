# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes errors: each a StrataError whose error_kind is the short word results carry as ``error``."""

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

# What brings a cluster and its kubeconfig into being, named in the messages that need one.
CLUSTER_HINT = "playbooks/layer3_cluster.yml creates the cluster and writes its kubeconfig"


class K8sError(StrataError):
    """Base of the Kubernetes errors; ``error_kind`` is the short word the result's ``error`` carries."""

    error_kind = "error"


class K8sMissingLibrary(K8sError):
    error_kind = "missing_library"


class K8sArgumentError(K8sError):
    """A connection option has a value the client cannot use (details: option)."""

    error_kind = "argument"


class K8sConfigError(K8sError):
    """The kubeconfig is missing, unreadable or invalid."""

    error_kind = "kubeconfig"


class K8sContextError(K8sConfigError):
    """The requested context is not in the kubeconfig (details: contexts)."""

    error_kind = "context"


class K8sUnreachable(K8sError):
    """The API server does not answer (details: url, cause)."""

    error_kind = "unreachable"


class K8sAuthError(K8sError):
    """Credentials expired, rejected (401) or not allowed (403) (details: status)."""

    error_kind = "auth"


class K8sNotFound(K8sError):
    """An object does not exist (details: kind, name, namespace, existing)."""

    error_kind = "not_found"


class K8sConflict(K8sError):
    error_kind = "conflict"


class K8sApiError(K8sError):
    """Any other error answer of the API server (details: status, api_reason)."""

    error_kind = "api"


class K8sGone(K8sApiError):
    """410 Gone: a watch's resourceVersion is too old (watch_until re-lists)."""

    error_kind = "gone"


class K8sTimeout(K8sError):
    """A wait ran out of time (details: waited_for, elapsed, last)."""

    error_kind = "timeout"
