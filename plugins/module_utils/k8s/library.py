# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kubernetes Python library, imported when first needed: modules report its absence, never
crash on it.

It is used for what it is good at: kubeconfig and in-cluster loading (auth plugins, certificate
files, token refresh) and its configured urllib3 pool. Requests go through that pool directly
(client.py), so this works the same across client versions. Importing it takes 0.3-1 s (every API
and model class), most of a read-only module's run, so a kubeconfig of plain settings is loaded
without it (plainconfig.py) and ``kubernetes()`` imports it only for the rest.
"""

import importlib.util

__all__ = [
    "HAS_K8S",
    "kubernetes",
    "missing_library_message",
    "urllib3",
    "yaml",
]

try:  # both are dependencies of the kubernetes library, and light
    import urllib3
    import yaml
except ImportError:  # pragma: no cover - reported through missing_library_message
    urllib3 = yaml = None

HAS_K8S = urllib3 is not None and yaml is not None and importlib.util.find_spec("kubernetes") is not None


class _Library:
    """What this collection takes from the kubernetes library."""

    def __init__(self):
        from kubernetes import config  # noqa: PLC0415 - the slow import, only when needed
        from kubernetes.client import Configuration, rest  # noqa: PLC0415
        from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

        self.config = config
        self.Configuration = Configuration  # pylint: disable=invalid-name
        self.rest = rest
        self.ConfigException = ConfigException  # pylint: disable=invalid-name


_LOADED = []


def kubernetes():
    """The library's parts (config, Configuration, rest, ConfigException), imported once."""
    if not _LOADED:
        _LOADED.append(_Library())
    return _LOADED[0]


def missing_library_message():
    return (
        "the kubernetes Python library is required on the controller (pip install kubernetes); "
        "it cannot be imported here"
    )
