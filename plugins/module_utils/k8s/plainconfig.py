# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A kubeconfig context of plain settings, loaded without the kubernetes library.

Plain: the cluster has ``server`` and optionally ``certificate-authority(-data)``,
``insecure-skip-tls-verify`` and ``tls-server-name``; the user has a client certificate and key
(files or ``*-data``) and/or a ``token``. That is what kind, k3s, kwok and service-account
kubeconfigs hold. Anything else (exec and auth-provider plugins, proxy-url, username/password,
tokenFile, impersonation) or anything malformed makes ``load`` return None, and get_client loads
the context through the library as before, with its checks and error messages. The meaning of each
key is kubectl's (k8s.io/client-go/tools/clientcmd/api/v1/types.go); relative file paths are
relative to the kubeconfig's directory, as client-go resolves them.
"""

import base64
import binascii
import os
import shutil
import ssl
import tempfile

from ansible_collections.strata.ops.plugins.module_utils.k8s.library import urllib3
from ansible_collections.strata.ops.plugins.module_utils.process_end import at_exit

PLAIN_CLUSTER_KEYS = frozenset(
    (
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
    )
)
PLAIN_USER_KEYS = frozenset(
    ("client-certificate", "client-certificate-data", "client-key", "client-key-data", "token")
)
_TEMP_DIRS = []


class PlainConfiguration:
    """The part of kubernetes.client.Configuration that K8sClient and get_client read."""

    def __init__(self, host, ca_file=None, ca_data=None, verify=True, server_name=None):
        self.host = host
        self.ca_file = ca_file
        self.ca_data = ca_data
        self.verify = verify
        self.server_name = server_name
        self.cert_file = None
        self.key_file = None
        self.token = None
        self.username = None
        self.password = None

    def auth_settings(self):
        if not self.token:
            return {}
        return {"BearerToken": {"in": "header", "key": "authorization", "value": "Bearer " + self.token}}

    def pool_manager(self):
        cert_reqs = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        context = None
        if self.cert_file:
            # The client key goes into the TLS context once; a copy of embedded key data written for
            # ssl (it loads keys from files only) is removed at once, not at exit: a module killed
            # later (kill -9, a timeout) must leave no copy of the key behind.
            context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=cert_reqs)
            context.load_cert_chain(self.cert_file, self.key_file)
            remove_private_files()
        return urllib3.PoolManager(
            num_pools=4,
            maxsize=4,
            cert_reqs=cert_reqs,
            ca_certs=self.ca_file,
            ca_cert_data=self.ca_data,
            ssl_context=context,
            server_hostname=self.server_name,
        )


def _named(doc, section, name):
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def _decoded(value):
    try:
        return base64.standard_b64decode(value.encode() if isinstance(value, str) else value)
    except (binascii.Error, ValueError, TypeError, AttributeError):
        return None


def remove_private_files():
    """The private directory of the embedded certificate/key copies, gone (also at exit)."""
    while _TEMP_DIRS:
        shutil.rmtree(_TEMP_DIRS.pop(), True)


def _private_file(data):
    """Embedded client certificate/key data as a 0600 file (ssl loads the chain from files only),
    in a private directory removed once the TLS context holds it (or when the module ends)."""
    if not _TEMP_DIRS:
        _TEMP_DIRS.append(tempfile.mkdtemp(prefix="strata-kubeconfig-"))
        at_exit(remove_private_files)
    handle, path = tempfile.mkstemp(dir=_TEMP_DIRS[0])
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return path


def _file_or_data(body, key, base_dir, as_file):
    """(path, None) for ``key``, (None, pem text) or a 0600 file for ``key-data``; False when broken."""
    if body.get(key + "-data"):
        data = _decoded(body[key + "-data"])
        if not data:
            return False
        return (_private_file(data), None) if as_file else (None, data.decode("ascii", "replace"))
    if body.get(key):
        path = os.path.join(base_dir, os.path.expanduser(body[key]))
        return (path, None) if os.path.isfile(path) else False
    return None, None


def load(doc, context, base_dir):
    """A PlainConfiguration for ``context`` of the kubeconfig ``doc``, or None (not plain, or broken:
    the library path reports it)."""
    entry = _named(doc, "contexts", context)
    refs = entry.get("context") if isinstance(entry, dict) else None
    if not isinstance(refs, dict) or set(refs) - {"cluster", "user", "namespace"}:
        return None
    cluster = (_named(doc, "clusters", refs.get("cluster")) or {}).get("cluster")
    user = (_named(doc, "users", refs.get("user")) or {}).get("user") or {}
    if not isinstance(cluster, dict) or not isinstance(user, dict):
        return None
    if set(cluster) - PLAIN_CLUSTER_KEYS or set(user) - PLAIN_USER_KEYS or not cluster.get("server"):
        return None
    ca = _file_or_data(cluster, "certificate-authority", base_dir, as_file=False)
    cert = _file_or_data(user, "client-certificate", base_dir, as_file=True)
    key = _file_or_data(user, "client-key", base_dir, as_file=True)
    if False in (ca, cert, key) or bool(cert[0]) != bool(key[0]):
        return None
    cfg = PlainConfiguration(
        str(cluster["server"]).rstrip("/"),
        ca_file=ca[0],
        ca_data=ca[1],
        verify=not cluster.get("insecure-skip-tls-verify", False),
        server_name=cluster.get("tls-server-name"),
    )
    cfg.cert_file, cfg.key_file = cert[0], key[0]
    cfg.token = user.get("token")
    if not (cfg.cert_file or cfg.token):
        return None  # anonymous: leave it to the library's rules
    return cfg
