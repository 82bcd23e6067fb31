# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kubernetes Python library, imported once: modules report its absence, never crash on it.

It is used for what it is good at: kubeconfig and in-cluster loading (auth plugins, certificate
files, token refresh) and its configured urllib3 pool. Requests go through that pool directly
(client.py), so this works the same across client versions.
"""

__all__ = [
    "HAS_K8S",
    "K8S_IMPORT_ERROR",
    "ConfigException",
    "K8sConfiguration",
    "k8s_config",
    "k8s_rest",
    "missing_library_message",
    "urllib3",
    "yaml",
]

K8S_IMPORT_ERROR = None
try:
    import urllib3
    import yaml
    from kubernetes import config as k8s_config
    from kubernetes.client import Configuration as K8sConfiguration
    from kubernetes.client import rest as k8s_rest
    from kubernetes.config.config_exception import ConfigException
except ImportError as _exc:  # the module reports it through K8sMissingLibrary
    K8S_IMPORT_ERROR = _exc
    urllib3 = yaml = k8s_config = K8sConfiguration = k8s_rest = None

    class ConfigException(Exception):  # never raised: get_client stops first without the library
        pass


HAS_K8S = K8S_IMPORT_ERROR is None


def missing_library_message():
    return (
        "the kubernetes Python library is required on the controller (pip install kubernetes); "
        f"import failed: {K8S_IMPORT_ERROR}"
    )
