# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by every strata.ops module that talks to the Kubernetes API.

Use with ``extends_documentation_fragment: [strata.ops.k8s_auth]``; the argument spec is
``plugins/module_utils/k8s/kubeconfig.py``'s ``K8S_AUTH_ARGSPEC`` and the client is built with
``client_from_module(module)``. In a play, ``module_defaults: {group/strata.ops.k8s: ...}``
sets them once for the whole action group.
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path of the kubeconfig file on the controller (mode 0600). Its content is never
        logged or returned.
      - When omitted, C($KUBECONFIG) (its first entry), else C(~/.kube/config); inside a pod
        with neither, the pod's service account (in-cluster configuration).
      - A missing or unreadable file, embedded C(*-data) that is not base64, a client
        certificate that has expired, or one the API server rejects fails the task with a
        message saying which.
    type: path
  context:
    description:
      - Context of the kubeconfig to use; the kubeconfig's current context when omitted.
      - An unknown context fails the task with the list of contexts the file holds.
    type: str
  api_timeout:
    description:
      - Seconds to wait for the API server to accept a connection and to answer one request
        (1 or more; 0 or less fails the task before anything is asked). An API server that
        does not answer fails the task naming its URL and why (connection refused, timeout, TLS).
      - Waits (watches) have their own timeouts.
    type: int
    default: 10
requirements:
  - kubernetes (the Python client) on the controller
notes:
  - 'Runs on the controller; use C(delegate_to: localhost) (or a play on C(localhost)).'
"""
