# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""From a kubeconfig file (or the in-cluster service account) to a K8sClient, with every way that
can fail named: a missing or unreadable file, an unknown context, undecodable embedded data, an
expired certificate, a timeout that cannot work."""

import base64
import os

from ansible_collections.strata.ops.plugins.module_utils.k8s import plainconfig
from ansible_collections.strata.ops.plugins.module_utils.k8s.client import DEFAULT_API_TIMEOUT, K8sClient
from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import (
    CLUSTER_HINT,
    K8sArgumentError,
    K8sAuthError,
    K8sConfigError,
    K8sContextError,
    K8sMissingLibrary,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.library import (
    HAS_K8S,
    kubernetes,
    missing_library_message,
    yaml,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.x509 import certificate_problem

DEFAULT_KUBECONFIG = "~/.kube/config"


def kubeconfig_path(kubeconfig=None, environ=None):
    """The kubeconfig file to use: the argument, else $KUBECONFIG (first entry), else
    ~/.kube/config. Returns (path, source)."""
    environ = os.environ if environ is None else environ
    if kubeconfig:
        return os.path.expanduser(kubeconfig), "the kubeconfig option"
    if environ.get("KUBECONFIG"):
        return os.path.expanduser(environ["KUBECONFIG"].split(os.pathsep)[0]), "$KUBECONFIG"
    return os.path.expanduser(DEFAULT_KUBECONFIG), "the default " + DEFAULT_KUBECONFIG


def _check_kubeconfig_file(path, source):
    if not os.path.exists(path):
        raise K8sConfigError(
            f"kubeconfig {path} (from {source}) does not exist: "
            f"create the cluster first ({CLUSTER_HINT}) or pass the right file as kubeconfig / $KUBECONFIG",
            kubeconfig=path,
        )
    if not os.access(path, os.R_OK):
        raise K8sConfigError(
            f"kubeconfig {path} is not readable by this user: run as its owner (it should be mode "
            "0600) or pass another file",
            kubeconfig=path,
        )


def _check_kubeconfig_shape(path):
    """A kubeconfig is a YAML mapping (clusters, contexts, users): say so for any other file, which
    the kubernetes library would only report with a Python error text."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise K8sConfigError(
            f"kubeconfig {path} cannot be parsed as YAML ({type(exc).__name__}: {exc}): regenerate it "
            f"({CLUSTER_HINT})",
            kubeconfig=path,
        ) from None
    if not isinstance(document, dict):
        found = "an empty file" if document is None else f"a YAML {type(document).__name__}"
        raise K8sConfigError(
            f"kubeconfig {path} is not a kubeconfig: it holds {found}, not a mapping with clusters, "
            f"contexts and users. Pass the cluster's kubeconfig ({CLUSTER_HINT})",
            kubeconfig=path,
        )


def _context_names(path):
    _check_kubeconfig_shape(path)
    library = kubernetes()
    try:
        contexts, active = library.config.list_kube_config_contexts(config_file=path)
    except (library.ConfigException, ValueError, TypeError, AttributeError) as exc:
        raise K8sConfigError(
            f"kubeconfig {path} is not a valid kubeconfig ({exc}): regenerate it ({CLUSTER_HINT})",
            kubeconfig=path,
        ) from None
    except Exception as exc:  # yaml errors and the like
        raise K8sConfigError(
            f"kubeconfig {path} cannot be parsed ({type(exc).__name__}: {exc}): regenerate it",
            kubeconfig=path,
        ) from None
    names = [c.get("name") for c in contexts or [] if isinstance(c, dict)]
    return names, (active or {}).get("name")


def check_api_timeout(api_timeout):
    """api_timeout as a positive number of seconds; K8sArgumentError otherwise (urllib3 refuses
    a timeout <= 0 with a bare ValueError, and 0 must not mean "the default")."""
    if isinstance(api_timeout, bool) or not isinstance(api_timeout, (int, float)) or api_timeout <= 0:
        raise K8sArgumentError(
            f"api_timeout must be 1 second or more, got {api_timeout!r}: "
            "it is how long each request to the API server may take (waits have their own timeouts); "
            f"leave it out for the default {DEFAULT_API_TIMEOUT} s",
            option="api_timeout",
        )
    return api_timeout


# Embedded data of a kubeconfig's cluster and user entries: the kubernetes client decodes them
# with base64.standard_b64decode when it loads the kubeconfig (kube_config.FileOrData).
EMBEDDED_DATA = {
    "cluster": ("clusters", ("certificate-authority-data",)),
    "user": ("users", ("client-certificate-data", "client-key-data")),
}


def undecodable_data(path, context):
    """['<key> of <cluster|user> <name>', ...]: the embedded *-data entries of the context's
    cluster and user that are not base64 as the kubernetes client decodes them."""
    try:
        with open(path) as handle:
            doc = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError):
        return []
    found = []
    refs = {}
    for entry in doc.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name") == context:
            refs = entry.get("context") or {}
    for ref, (section, keys) in EMBEDDED_DATA.items():
        for entry in doc.get(section) or []:
            if not isinstance(entry, dict) or entry.get("name") != refs.get(ref):
                continue
            body = entry.get(ref) or {}
            for key in keys:
                value = body.get(key)
                if not value:
                    continue
                try:
                    base64.standard_b64decode(value.encode() if isinstance(value, str) else value)
                except (ValueError, TypeError, AttributeError) as exc:
                    found.append(f"{key} of {ref} {entry.get('name')!r} ({exc})")
    return found


def _choose_context(path, context):
    """The context to load from the kubeconfig: the given one (which must be there), else the current one."""
    names, active = _context_names(path)
    used_context = context or active
    if context and context not in names:
        current = " " + repr(active) if active else ""
        raise K8sContextError(
            f"context {context!r} is not in kubeconfig {path}; "
            f"contexts there: {', '.join(names) or 'none'} "
            f"(pass one of them as context, or omit context to use the current one{current})",
            kubeconfig=path,
            contexts=names,
        )
    if not used_context:
        raise K8sContextError(
            f"kubeconfig {path} sets no current-context; pass context (one of: {', '.join(names) or 'none'})",
            kubeconfig=path,
            contexts=names,
        )
    return used_context


def _load_context(cfg, path, used_context):
    """Load the context into cfg; K8sConfigError naming undecodable embedded data if that is why it fails."""
    library = kubernetes()
    try:
        library.config.load_kube_config(
            config_file=path, context=used_context, client_configuration=cfg, persist_config=False
        )
    except library.ConfigException as exc:
        raise K8sConfigError(
            f"kubeconfig {path}, context {used_context!r}: {exc}; fix or regenerate it ({CLUSTER_HINT})",
            kubeconfig=path,
            context=used_context,
        ) from None
    except (ValueError, TypeError) as exc:  # binascii.Error from embedded *-data, and the like
        bad = undecodable_data(path, used_context)
        reason = "not base64: " + "; ".join(bad) if bad else f"cannot be loaded ({exc})"
        raise K8sConfigError(
            f"kubeconfig {path}, context {used_context!r}: {reason}; embedded *-data entries hold the "
            "base64 of the PEM file (base64 -w0 ca.crt): fix them or regenerate the kubeconfig "
            f"({CLUSTER_HINT})",
            kubeconfig=path,
            context=used_context,
        ) from None


def _check_client_certificate(cfg, source, path, used_context):
    """K8sAuthError if the loaded client certificate has expired (or is otherwise unusable)."""
    if not cfg.cert_file:
        return
    try:
        with open(cfg.cert_file, "rb") as handle:
            problem = certificate_problem(handle.read())
    except OSError:
        problem = None
    if problem:
        raise K8sAuthError(
            f"the client certificate of {source} {problem}: the kubeconfig has expired; fetch a new "
            "one from the cluster (lab: re-run playbooks/layer3_cluster.yml)",
            kubeconfig=path,
            context=used_context,
        )


def _plain(path, context):
    """(PlainConfiguration, context) when the context is plain (plainconfig.py), else (None, None)."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    used_context = context or doc.get("current-context")
    if not isinstance(used_context, str) or not used_context:
        return None, None
    cfg = plainconfig.load(doc, used_context, os.path.dirname(os.path.abspath(path)))
    return (cfg, used_context) if cfg else (None, None)


def _load_kubeconfig(kubeconfig, context):
    """The configuration of kubeconfig/context: plain settings without the kubernetes library,
    anything else through it. Returns (cfg, source, used_context)."""
    path, source = kubeconfig_path(kubeconfig)
    _check_kubeconfig_file(path, source)
    cfg, used_context = _plain(path, context)
    if cfg is None:
        used_context = _choose_context(path, context)
        cfg = kubernetes().Configuration()
        _load_context(cfg, path, used_context)
    source = f"kubeconfig {path}, context {used_context!r}"
    _check_client_certificate(cfg, source, path, used_context)
    return cfg, source, used_context


def get_client(kubeconfig=None, context=None, api_timeout=DEFAULT_API_TIMEOUT, in_cluster=None, probe=True):
    """A ready K8sClient.

    kubeconfig/context as kubectl takes them. ``in_cluster=None`` uses the pod's service
    account when no kubeconfig is given, $KUBECONFIG is unset and KUBERNETES_SERVICE_HOST is
    set. ``probe`` asks the API server for /version so that an unreachable server or
    rejected credentials fail here, with a message naming the URL.
    """
    if not HAS_K8S:
        raise K8sMissingLibrary(missing_library_message())
    check_api_timeout(api_timeout)
    if in_cluster is None:
        in_cluster = (
            not kubeconfig
            and not os.environ.get("KUBECONFIG")
            and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        )
    if in_cluster:
        library = kubernetes()
        cfg = library.Configuration()
        try:
            library.config.load_incluster_config(client_configuration=cfg)
        except library.ConfigException as exc:
            raise K8sConfigError(f"in-cluster configuration failed: {exc}") from None
        source, used_context = "in-cluster service account", None
    else:
        cfg, source, used_context = _load_kubeconfig(kubeconfig, context)
    client = K8sClient(cfg, source=source, api_timeout=api_timeout, context=used_context)
    if probe:
        client.version()
    return client


def client_from_module(module, probe=True):
    """get_client from a module's k8s_auth options (see doc fragment strata.ops.k8s_auth)."""
    params = module.params
    return get_client(
        kubeconfig=params.get("kubeconfig"),
        context=params.get("context"),
        api_timeout=params.get("api_timeout"),
        probe=probe,
    )
