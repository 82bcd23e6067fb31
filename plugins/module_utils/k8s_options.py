# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options of every k8s-facing module (doc fragment strata.ops.k8s_auth), outside
the k8s package so that a module that talks to Kubernetes only on some paths (pod_checkpoint's
method=kubelet) takes them without loading the kubernetes library at start."""

DEFAULT_API_TIMEOUT = 10

K8S_AUTH_ARGSPEC = dict(
    kubeconfig=dict(type="path", no_log=False),
    context=dict(type="str"),
    api_timeout=dict(type="int", default=DEFAULT_API_TIMEOUT),
)
