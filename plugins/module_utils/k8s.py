# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes API access for strata.ops modules: client, typed errors, reads, patches, scale,
watch-based waits, and the pure checks behind ``cluster_health``.

Shape (after kubernetes.core's module_utils/k8s, not its code):

* ``get_client(kubeconfig, context, api_timeout)`` or ``client_from_module(module)`` builds a
  ``K8sClient`` from a kubeconfig file and context (or the in-cluster service account). The
  kubeconfig is read, never logged or returned.
* Every helper raises a ``K8sError`` subclass whose message says what is wrong and how to fix
  it; a module's ``main()`` catches ``K8sError`` once and calls ``fail_from_exception``.
* ``K8sClient.watch_until(kind, predicate, ...)`` lists, then watches from the list's
  resourceVersion, keeps the current set of objects, and returns as soon as the PURE
  ``predicate(items)`` holds; it re-lists on 410 Gone and raises ``K8sTimeout`` at the
  deadline. There are no fixed sleeps.
* Objects are plain dicts exactly as the API server sends them (camelCase JSON).

The ``kubernetes`` Python client is used for what it is good at: kubeconfig/in-cluster loading
(auth plugins, certificate files, token refresh) and its configured urllib3 pool. Requests go
through that pool directly, so this works the same across client versions.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import json
import os
import re
import time

try:
    from urllib.parse import quote, urlencode
except ImportError:  # pragma: no cover - Python 2 is not supported, kept for sanity's compile
    from urllib import quote, urlencode  # type: ignore

K8S_IMPORT_ERROR = None
try:
    import urllib3
    import yaml
    from kubernetes import config as k8s_config
    from kubernetes.client import Configuration as K8sConfiguration
    from kubernetes.client import rest as k8s_rest
    from kubernetes.config.config_exception import ConfigException
except ImportError as _exc:  # the module reports it with missing_required_lib
    K8S_IMPORT_ERROR = _exc

    class ConfigException(Exception):  # never raised: get_client stops first without the library
        pass


HAS_K8S = K8S_IMPORT_ERROR is None
DEFAULT_KUBECONFIG = "~/.kube/config"
DEFAULT_API_TIMEOUT = 10

# Shared options of every k8s-facing module (documented by doc fragment strata.ops.k8s_auth).
K8S_AUTH_ARGSPEC = dict(
    kubeconfig=dict(type="path", no_log=False),
    context=dict(type="str"),
    api_timeout=dict(type="int", default=DEFAULT_API_TIMEOUT),
)

# kind -> (apiVersion, plural, namespaced). Enough for what our modules touch.
RESOURCES = {
    "Namespace": ("v1", "namespaces", False),
    "Node": ("v1", "nodes", False),
    "PersistentVolume": ("v1", "persistentvolumes", False),
    "Pod": ("v1", "pods", True),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
    "Service": ("v1", "services", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Secret": ("v1", "secrets", True),
    "Event": ("v1", "events", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Deployment": ("apps/v1", "deployments", True),
    "StatefulSet": ("apps/v1", "statefulsets", True),
    "DaemonSet": ("apps/v1", "daemonsets", True),
    "ReplicaSet": ("apps/v1", "replicasets", True),
    "Job": ("batch/v1", "jobs", True),
    "Lease": ("coordination.k8s.io/v1", "leases", True),
}
SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet")
PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}
LAB_HINT = "for the lab: tests/testbed/up controlplane, or playbooks/layer3_cluster.yml"


# --------------------------------------------------------------------------- exceptions


class K8sError(Exception):
    """Base of every error raised here. ``reason`` is a short machine-readable word;
    ``details`` go into the module's failure result next to ``msg``."""

    reason = "error"

    def __init__(self, msg, **details):
        super(K8sError, self).__init__(msg)
        self.msg = msg
        self.details = details


class K8sMissingLibrary(K8sError):
    reason = "missing_library"


class K8sArgumentError(K8sError):
    """A connection option has a value the client cannot use (details: option)."""

    reason = "argument"


class K8sConfigError(K8sError):
    """The kubeconfig is missing, unreadable or invalid."""

    reason = "kubeconfig"


class K8sContextError(K8sConfigError):
    """The requested context is not in the kubeconfig (details: contexts)."""

    reason = "context"


class K8sUnreachable(K8sError):
    """The API server does not answer (details: url, cause)."""

    reason = "unreachable"


class K8sAuthError(K8sError):
    """Credentials expired, rejected (401) or not allowed (403) (details: status)."""

    reason = "auth"


class K8sNotFound(K8sError):
    """An object does not exist (details: kind, name, namespace, existing)."""

    reason = "not_found"


class K8sConflict(K8sError):
    reason = "conflict"


class K8sApiError(K8sError):
    """Any other error answer of the API server (details: status, api_reason)."""

    reason = "api"


class K8sGone(K8sApiError):
    """410 Gone: a watch's resourceVersion is too old (watch_until re-lists)."""

    reason = "gone"


class K8sTimeout(K8sError):
    """A wait ran out of time (details: waited_for, elapsed, last)."""

    reason = "timeout"


def fail_from_exception(module, exc, **result):
    """The one place a module turns a K8sError into fail_json."""
    details = dict(exc.details) if isinstance(exc, K8sError) else {}
    details.update(result)
    module.fail_json(msg=str(exc), error=getattr(exc, "reason", "error"), **details)


def missing_library_message():
    return (
        "the kubernetes Python library is required on the controller (pip install kubernetes); "
        "import failed: {}".format(K8S_IMPORT_ERROR)
    )


# --------------------------------------------------------------------------- kubeconfig


def _der_item(data, pos):
    """(tag, content_start, content_end) of the DER item at pos."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(bytes(data[pos : pos + count]), "big")
        pos += count
    return tag, pos, pos + length


def _der_time(tag, raw):
    text = raw.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSS
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    return datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S")


def certificate_validity(pem_or_der):
    """(not_before, not_after) as naive UTC datetimes of an X.509 certificate, from PEM text
    or DER bytes, with the standard library only. Raises ValueError when it cannot parse."""
    data = pem_or_der
    if isinstance(data, str):
        data = data.encode("ascii")
    if b"-----BEGIN" in data:
        match = re.search(b"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", data, re.S)
        if not match:
            raise ValueError("no certificate in PEM data")
        data = base64.b64decode(b"".join(match.group(1).split()))
    try:
        _tag, start, _end = _der_item(data, 0)  # Certificate
        _tag, pos, _end = _der_item(data, start)  # tbsCertificate
        tag, _start, end = _der_item(data, pos)
        if tag == 0xA0:  # [0] version
            tag, _start, end = _der_item(data, end)
        for _field in ("signature", "issuer"):  # end is past serial, then each field
            tag, _start, end = _der_item(data, end)
        tag, start, _end = _der_item(data, end)  # validity SEQUENCE
        tag, s1, e1 = _der_item(data, start)
        not_before = _der_time(tag, bytes(data[s1:e1]))
        tag, s2, e2 = _der_item(data, e1)
        not_after = _der_time(tag, bytes(data[s2:e2]))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not an X.509 certificate: {}".format(exc)) from None
    return not_before, not_after


def certificate_problem(pem_or_der, now=None):
    """None when the certificate is valid at ``now`` (naive UTC), else why not."""
    try:
        not_before, not_after = certificate_validity(pem_or_der)
    except ValueError:
        return None  # the API server will judge it
    now = now or datetime.datetime.utcnow()
    if now > not_after:
        return "expired at {}Z".format(not_after.isoformat())
    if now < not_before:
        return "not valid before {}Z".format(not_before.isoformat())
    return None


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
            "kubeconfig {} (from {}) does not exist: create the cluster first ({}) or pass "
            "the right file as kubeconfig / $KUBECONFIG".format(path, source, LAB_HINT),
            kubeconfig=path,
        )
    if not os.access(path, os.R_OK):
        raise K8sConfigError(
            "kubeconfig {} is not readable by this user: run as its owner (it should be mode "
            "0600) or pass another file".format(path),
            kubeconfig=path,
        )


def _context_names(path):
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=path)
    except (ConfigException, ValueError, TypeError, AttributeError) as exc:
        raise K8sConfigError(
            "kubeconfig {} is not a valid kubeconfig ({}): regenerate it ({})".format(path, exc, LAB_HINT),
            kubeconfig=path,
        ) from None
    except Exception as exc:  # yaml errors and the like
        raise K8sConfigError(
            "kubeconfig {} cannot be parsed ({}: {}): regenerate it".format(path, type(exc).__name__, exc),
            kubeconfig=path,
        ) from None
    names = [c.get("name") for c in contexts or [] if isinstance(c, dict)]
    return names, (active or {}).get("name")


def check_api_timeout(api_timeout):
    """api_timeout as a positive number of seconds; K8sArgumentError otherwise (urllib3 refuses
    a timeout <= 0 with a bare ValueError, and 0 must not mean "the default")."""
    if isinstance(api_timeout, bool) or not isinstance(api_timeout, (int, float)) or api_timeout <= 0:
        raise K8sArgumentError(
            "api_timeout must be 1 second or more, got {!r}: it is how long each request to the API "
            "server may take (waits have their own timeouts); leave it out for the default {} s".format(
                api_timeout, DEFAULT_API_TIMEOUT
            ),
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
                    found.append("{} of {} {!r} ({})".format(key, ref, entry.get("name"), exc))
    return found


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
    cfg = K8sConfiguration()
    if in_cluster is None:
        in_cluster = (
            not kubeconfig
            and not os.environ.get("KUBECONFIG")
            and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        )
    if in_cluster:
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise K8sConfigError("in-cluster configuration failed: {}".format(exc)) from None
        source, path, used_context = "in-cluster service account", None, None
    else:
        path, source = kubeconfig_path(kubeconfig)
        _check_kubeconfig_file(path, source)
        names, active = _context_names(path)
        used_context = context or active
        if context and context not in names:
            raise K8sContextError(
                "context {!r} is not in kubeconfig {}; contexts there: {} "
                "(pass one of them as context, or omit context to use the current one{})".format(
                    context, path, ", ".join(names) or "none", " " + repr(active) if active else ""
                ),
                kubeconfig=path,
                contexts=names,
            )
        if not used_context:
            raise K8sContextError(
                "kubeconfig {} sets no current-context; pass context (one of: {})".format(
                    path, ", ".join(names) or "none"
                ),
                kubeconfig=path,
                contexts=names,
            )
        try:
            k8s_config.load_kube_config(
                config_file=path, context=used_context, client_configuration=cfg, persist_config=False
            )
        except ConfigException as exc:
            raise K8sConfigError(
                "kubeconfig {}, context {!r}: {}; fix or regenerate it ({})".format(
                    path, used_context, exc, LAB_HINT
                ),
                kubeconfig=path,
                context=used_context,
            ) from None
        except (ValueError, TypeError) as exc:  # binascii.Error from embedded *-data, and the like
            bad = undecodable_data(path, used_context)
            raise K8sConfigError(
                "kubeconfig {}, context {!r}: {}; embedded *-data entries hold the base64 of the PEM "
                "file (base64 -w0 ca.crt): fix them or regenerate the kubeconfig ({})".format(
                    path,
                    used_context,
                    "not base64: " + "; ".join(bad) if bad else "cannot be loaded ({})".format(exc),
                    LAB_HINT,
                ),
                kubeconfig=path,
                context=used_context,
            ) from None
        source = "kubeconfig {}, context {!r}".format(path, used_context)
        if cfg.cert_file:
            try:
                with open(cfg.cert_file, "rb") as handle:
                    problem = certificate_problem(handle.read())
            except OSError:
                problem = None
            if problem:
                raise K8sAuthError(
                    "the client certificate of {} {}: the kubeconfig has expired; fetch a new "
                    "one from the cluster (lab: re-run playbooks/layer3_cluster.yml)".format(source, problem),
                    kubeconfig=path,
                    context=used_context,
                )
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


# --------------------------------------------------------------------------- paths


def resource_path(kind, namespace=None, name=None, subresource=None, *, api_version=None, plural=None):
    """REST path of a kind (from RESOURCES unless api_version and plural are given)."""
    if kind in RESOURCES and not (api_version and plural):
        api_version, plural, namespaced = RESOURCES[kind]
    elif api_version and plural:
        namespaced = namespace is not None
    else:
        raise K8sError(
            "unknown kind {!r}: one of {}, or give api_version and plural".format(
                kind, ", ".join(sorted(RESOURCES))
            )
        )
    base = "/api/v1" if api_version == "v1" else "/apis/" + api_version
    parts = [base]
    if namespaced and namespace:
        parts.append("/namespaces/" + quote(namespace, safe=""))
    parts.append("/" + plural)
    if name:
        parts.append("/" + quote(name, safe=""))
        if subresource:
            parts.append("/" + subresource)
    return "".join(parts)


def object_key(obj):
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def object_ref(kind, name, namespace=None):
    return "{} {}/{}".format(kind, namespace, name) if namespace else "{} {}".format(kind, name)


# --------------------------------------------------------------------------- client


class K8sClient:
    """Thin REST client over the kubernetes library's configured urllib3 pool."""

    def __init__(self, configuration, source="", api_timeout=DEFAULT_API_TIMEOUT, context=None):
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self.source = source
        self.context = context
        self.api_timeout = api_timeout
        self.pool = k8s_rest.RESTClientObject(configuration).pool_manager

    # ---- transport

    def _headers(self, content_type=None):
        headers = {"Accept": "application/json", "User-Agent": "strata.ops"}
        if content_type:
            headers["Content-Type"] = content_type
        for auth in (self.configuration.auth_settings() or {}).values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[auth["key"]] = auth["value"]
        if self.configuration.username and self.configuration.password:
            headers.update(
                urllib3.make_headers(basic_auth=self.configuration.get_basic_auth_token().split(" ", 1)[-1])
            )
        return headers

    def _unreachable(self, exc):
        cause = getattr(exc, "reason", None) or exc
        text = str(cause)
        if "refused" in text.lower():
            why = "connection refused (nothing listens there: is the cluster running?)"
        elif isinstance(cause, (urllib3.exceptions.ConnectTimeoutError,)) or "timed out" in text.lower():
            why = "connection timed out after {} s (host down or filtered?)".format(self.api_timeout)
        elif isinstance(cause, urllib3.exceptions.SSLError):
            why = "TLS failed ({}): the kubeconfig's CA or server does not match this cluster".format(text)
        elif "Name or service not known" in text or "resolution" in text.lower():
            why = "the host name does not resolve"
        else:
            why = text
        return K8sUnreachable(
            "Kubernetes API server {} ({}) is unreachable: {}; start the cluster ({}) or fix "
            "the server URL in the kubeconfig".format(self.host, self.source, why, LAB_HINT),
            url=self.host,
            cause=why,
        )

    def _raise_for_status(self, status, payload, method, path):
        body = payload if isinstance(payload, dict) else {}
        message = body.get("message") or (payload if isinstance(payload, str) else "") or ""
        api_reason = body.get("reason") or ""
        if status == 401:
            raise K8sAuthError(
                "the API server {} rejected the credentials of {} (401 Unauthorized): the token or "
                "client certificate is expired, revoked or from another cluster; fetch a fresh "
                "kubeconfig".format(self.host, self.source),
                status=status,
            )
        if status == 403:
            raise K8sAuthError(
                "{} {} is forbidden for the user of {}: {} (grant the RBAC permission or use "
                "another context)".format(method, path, self.source, message),
                status=status,
            )
        if status == 404:
            raise K8sNotFound("{} {}: not found ({})".format(method, path, message), status=status)
        if status == 409:
            raise K8sConflict("{} {}: conflict: {}".format(method, path, message), status=status)
        if status == 410:
            raise K8sGone(
                "{} {}: gone: {}".format(method, path, message), status=status, api_reason=api_reason
            )
        raise K8sApiError(
            "{} {} failed with HTTP {} {}: {}".format(method, path, status, api_reason, message),
            status=status,
            api_reason=api_reason,
        )

    def request(
        self,
        method,
        path,
        query=None,
        body=None,
        *,
        content_type="application/json",
        timeout=None,
        stream=False,
    ):
        """One API call; returns the decoded JSON (or the raw response with stream=True)."""
        url = self.host + path
        if query:
            url += "?" + urlencode([(k, v) for k, v in query.items() if v is not None])
        data = None if body is None else json.dumps(body).encode("utf-8")
        if timeout is None:
            timeout = urllib3.Timeout(connect=self.api_timeout, read=self.api_timeout)
        try:
            resp = self.pool.request(
                method,
                url,
                body=data,
                headers=self._headers(content_type if data is not None else None),
                timeout=timeout,
                retries=urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, backoff_factor=0.2),
                preload_content=not stream,
            )
        except urllib3.exceptions.MaxRetryError as exc:
            raise self._unreachable(exc) from None
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
            raise self._unreachable(exc) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise K8sUnreachable(
                "Kubernetes API server {} did not answer {} {} within {} s (api_timeout)".format(
                    self.host, method, path, self.api_timeout
                ),
                url=self.host,
                cause="read timeout",
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None
        if stream and resp.status < 400:
            return resp
        raw = resp.data if not stream else resp.read()
        try:
            payload = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        if resp.status >= 400:
            self._raise_for_status(resp.status, payload, method, path)
        return payload

    # ---- reads

    def version(self):
        return self.request("GET", "/version")

    def get(self, kind, name, namespace=None, subresource=None):
        """One object as a dict; K8sNotFound names the object when it does not exist."""
        try:
            return self.request("GET", resource_path(kind, namespace, name, subresource))
        except K8sNotFound:
            raise K8sNotFound(
                "{} does not exist".format(object_ref(kind, name, namespace)),
                kind=kind,
                name=name,
                namespace=namespace,
            ) from None

    def list(self, kind, namespace=None, label_selector=None, field_selector=None):
        """(items, resourceVersion) of a list; items carry kind and apiVersion."""
        result = self.request(
            "GET",
            resource_path(kind, namespace),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        api_version = RESOURCES[kind][0] if kind in RESOURCES else None
        items = result.get("items") or []
        for item in items:
            item.setdefault("kind", kind)
            if api_version:
                item.setdefault("apiVersion", api_version)
        return items, (result.get("metadata") or {}).get("resourceVersion")

    def _get_listing_others(self, kind, name, none_text):
        """A cluster-scoped object; when it does not exist the error lists those that do."""
        try:
            return self.get(kind, name)
        except K8sNotFound:
            items, _rv = self.list(kind)
            existing = sorted(object_key(i)[1] for i in items)
            raise K8sNotFound(
                "{} {!r} does not exist in the cluster ({}); {}s: {}".format(
                    kind.lower(), name, self.source, kind.lower(), ", ".join(existing) or none_text
                ),
                kind=kind,
                name=name,
                existing=existing,
            ) from None

    def get_node(self, name):
        """A Node; when it does not exist the error lists the nodes that do."""
        return self._get_listing_others("Node", name, "none (no node registered yet)")

    def get_namespace(self, name):
        """A Namespace; when it does not exist the error lists the namespaces that do."""
        return self._get_listing_others("Namespace", name, "none")

    # ---- writes

    def create(self, kind, body, namespace=None):
        return self.request("POST", resource_path(kind, namespace), body=body)

    def delete(self, kind, name, namespace=None, grace_period_seconds=None, propagation="Background"):
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            return self.request("DELETE", resource_path(kind, namespace, name), body=body)
        except K8sNotFound:
            return None

    def patch(
        self, kind, name, patch, namespace=None, *, patch_type="strategic", subresource=None, dry_run=False
    ):
        """Patch an object. patch_type: strategic (dict), merge (dict) or json (list of ops).
        Custom resources accept only merge and json."""
        if patch_type not in PATCH_TYPES:
            raise K8sError("patch_type must be one of {}".format(", ".join(PATCH_TYPES)))
        if patch_type == "json" and not isinstance(patch, list):
            raise K8sError("a json patch is a list of operations ({'op': ..., 'path': ...})")
        path = resource_path(kind, namespace, name, subresource)
        try:
            return self.request(
                "PATCH",
                path,
                body=patch,
                content_type=PATCH_TYPES[patch_type],
                query={"dryRun": "All"} if dry_run else None,
            )
        except K8sNotFound:
            raise K8sNotFound(
                "{} does not exist".format(object_ref(kind, name, namespace)),
                kind=kind,
                name=name,
                namespace=namespace,
            ) from None

    def scale(self, kind, name, namespace, replicas, dry_run=False):
        """Set spec.replicas through the scale subresource; returns (before, after)."""
        if kind not in SCALABLE:
            raise K8sError("cannot scale a {}: only {}".format(kind, ", ".join(SCALABLE)))
        current = self.get(kind, name, namespace, subresource="scale")
        before = (current.get("spec") or {}).get("replicas", 0)
        if before != replicas:
            self.patch(
                kind,
                name,
                {"spec": {"replicas": replicas}},
                namespace=namespace,
                patch_type="merge",
                subresource="scale",
                dry_run=dry_run,
            )
        return before, replicas

    # ---- watch

    def _watch_stream(
        self, kind, namespace, resource_version, seconds, *, label_selector=None, field_selector=None
    ):
        """Yield watch events (dicts) from resource_version for at most ``seconds``."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(seconds + 0.999))),
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
        }
        timeout = urllib3.Timeout(connect=self.api_timeout, read=seconds + 2)
        resp = self.request("GET", resource_path(kind, namespace), query=query, timeout=timeout, stream=True)
        buffer = b""
        try:
            for chunk in resp.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line.decode("utf-8"))
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            return
        finally:
            resp.release_conn()

    def watch_until(
        self,
        kind,
        predicate,
        namespace=None,
        *,
        label_selector=None,
        field_selector=None,
        timeout=60,
        description=None,
        summarize=None,
    ):
        """Wait until ``predicate(items)`` holds for the current set of objects.

        Lists once, then watches from the list's resourceVersion and applies each event to
        the set; evaluates the (pure) predicate after the list and after every event.
        Re-lists on 410 Gone. Returns a dict: items, resource_version, elapsed (s), events,
        relists. Raises K8sTimeout after ``timeout`` seconds, with ``summarize(items)`` (or
        the object names) of the last state seen.
        """
        start = time.monotonic()
        deadline = start + timeout
        what = (
            description or getattr(predicate, "__doc__", None) or getattr(predicate, "__name__", "condition")
        )
        relists = events = 0
        items, rv = self.list(kind, namespace, label_selector, field_selector)
        state = dict((object_key(o), o) for o in items)

        def current():
            return [state[k] for k in sorted(state)]

        def done():
            return dict(
                items=current(),
                resource_version=rv,
                elapsed=round(time.monotonic() - start, 3),
                events=events,
                relists=relists,
            )

        while True:
            if predicate(current()):
                return done()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = (
                    summarize(current()) if summarize else ["/".join(filter(None, k)) for k in sorted(state)]
                )
                raise K8sTimeout(
                    "timed out after {} s waiting for {} ({}{}); last state: {}".format(
                        timeout,
                        what.strip(),
                        kind,
                        " in namespace " + namespace if namespace else "",
                        last,
                    ),
                    waited_for=what.strip(),
                    elapsed=round(time.monotonic() - start, 3),
                    last=last,
                )
            try:
                stream = self._watch_stream(
                    kind,
                    namespace,
                    rv,
                    remaining,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
                for event in stream:
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            raise K8sGone(obj.get("message", "resourceVersion too old"))
                        raise K8sApiError(
                            "watch of {} failed: {}".format(kind, obj.get("message")),
                            status=obj.get("code"),
                        )
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if etype == "BOOKMARK":
                        continue
                    events += 1
                    obj.setdefault("kind", kind)
                    if etype == "DELETED":
                        state.pop(object_key(obj), None)
                    else:
                        state[object_key(obj)] = obj
                    if predicate(current()) or time.monotonic() >= deadline:
                        break
            except K8sGone:
                relists += 1
                items, rv = self.list(kind, namespace, label_selector, field_selector)
                state = dict((object_key(o), o) for o in items)


def retry_on_conflict(attempt, attempts=5, wait=0.2, sleep=time.sleep):
    """Call ``attempt()`` again while it raises K8sConflict (409), at most ``attempts`` times,
    waiting ``wait`` s more before each new try; returns what it returns. ``attempt`` must
    re-read the object it patches, so that each try sends the newer resourceVersion."""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except K8sConflict:
            if number == attempts:
                raise
            sleep(wait * number)
    return None  # pragma: no cover - the loop returns or raises


# --------------------------------------------------------------------------- pure predicates


def condition(obj, ctype):
    """The status condition of that type (dict) or None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(obj, ctype):
    cond = condition(obj, ctype)
    return bool(cond) and cond.get("status") == "True"


def node_is_ready(node):
    return is_true(node, "Ready")


def pod_is_ready(pod):
    return (
        (pod.get("status") or {}).get("phase") == "Running"
        and is_true(pod, "Ready")
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def workload_is_ready(obj):
    """A Deployment/StatefulSet whose controller has seen its spec and has every wanted
    replica updated and ready (0 wanted: none left)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < (obj.get("metadata") or {}).get("generation", 0):
        return False
    if wanted == 0:
        return status.get("replicas", 0) == 0
    return (
        status.get("readyReplicas", 0) >= wanted
        and status.get("updatedReplicas", 0) >= wanted
        and status.get("replicas", 0) == wanted
    )


def no_items(items):
    """no object left"""
    return not items


def all_items(check, minimum=1):
    """Predicate: at least ``minimum`` objects and ``check`` holds for every one."""

    def predicate(items):
        return len(items) >= minimum and all(check(i) for i in items)

    predicate.__doc__ = "at least {} object(s), all {}".format(
        minimum, getattr(check, "__name__", "matching")
    )
    return predicate


def named_ready(names, check=node_is_ready):
    """Predicate: every object named in ``names`` exists and ``check`` holds for it."""
    wanted = set(names)

    def predicate(items):
        found = dict((object_key(i)[1], i) for i in items)
        return all(n in found and check(found[n]) for n in wanted)

    predicate.__doc__ = "{} to be {}".format(", ".join(sorted(wanted)), getattr(check, "__name__", "ready"))
    return predicate


# --------------------------------------------------------------------------- health checks (pure)

BAD_WAITING_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
)
PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


def problem(kind, name, reason, namespace=None):
    entry = {"kind": kind, "name": name, "reason": reason}
    if namespace:
        entry["namespace"] = namespace
    return entry


def node_summary(node):
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    return {
        "name": meta.get("name"),
        "ready": node_is_ready(node),
        "unschedulable": bool(spec.get("unschedulable")),
        "labels": meta.get("labels") or {},
        "taints": [
            {"key": t.get("key"), "value": t.get("value"), "effect": t.get("effect")}
            for t in spec.get("taints") or []
        ],
        "allocatable": (node.get("status") or {}).get("allocatable") or {},
        "resource_version": meta.get("resourceVersion"),
    }


def node_problems(node, cordon_expected=False):
    """Problems of one node; a cordon is one unless ``cordon_expected`` (an experiment's)."""
    name = (node.get("metadata") or {}).get("name")
    found = []
    ready = condition(node, "Ready")
    if not ready or ready.get("status") != "True":
        why = (ready or {}).get("reason") or (ready or {}).get("message") or "no Ready condition"
        found.append(problem("Node", name, "not Ready ({})".format(why)))
    if (node.get("spec") or {}).get("unschedulable") and not cordon_expected:
        found.append(problem("Node", name, "cordoned (spec.unschedulable); kubectl uncordon {}".format(name)))
    for ctype in PRESSURE_CONDITIONS:
        if is_true(node, ctype):
            found.append(problem("Node", name, ctype))
    return found


# Taints Kubernetes puts on nodes itself (the node lifecycle controller, from conditions and the
# cordon; k8s.io/api/core/v1 well_known_taints.go): not ours to expect or to call unexpected.
KUBERNETES_TAINT_PREFIX = "node.kubernetes.io/"


def _taint_key(taint):
    return (taint.get("key"), taint.get("value") or None, taint.get("effect"))


def expected_node_problems(nodes, expected):
    """Problems where nodes lack an expected node, label or taint (or carry a taint they
    should not, when ``taints`` is given for them: Kubernetes' own node.kubernetes.io/ taints
    aside), or are not cordoned as ``unschedulable`` says. expected: name -> {labels, taints,
    unschedulable}."""
    by_name = dict((n["name"], n) for n in nodes)
    found = []
    for name in sorted(expected or {}):
        want = expected[name] or {}
        node = by_name.get(name)
        if node is None:
            found.append(problem("Node", name, "expected node is not registered"))
            continue
        for key, value in sorted((want.get("labels") or {}).items()):
            have = node["labels"].get(key)
            if have != str(value):
                found.append(
                    problem("Node", name, "label {}={} expected, found {}".format(key, value, have or "none"))
                )
        if want.get("taints") is not None:
            have = set(
                _taint_key(t)
                for t in node["taints"]
                if not (t.get("key") or "").startswith(KUBERNETES_TAINT_PREFIX)
            )
            wanted = set(_taint_key(t) for t in want["taints"])
            for key, value, effect in sorted(wanted - have, key=str):
                found.append(problem("Node", name, "taint {}={}:{} missing".format(key, value or "", effect)))
            for key, value, effect in sorted(have - wanted, key=str):
                found.append(
                    problem("Node", name, "unexpected taint {}={}:{}".format(key, value or "", effect))
                )
        if want.get("unschedulable") and not node["unschedulable"]:
            found.append(problem("Node", name, "expected to be cordoned (spec.unschedulable), is not"))
    return found


def check_expected_nodes(expected):
    """K8sArgumentError unless expected_nodes is name -> {labels: dict, taints: [{key, value,
    effect}], unschedulable: bool} (each key optional)."""
    for name, want in (expected or {}).items():
        where = "expected_nodes[{!r}]".format(name)
        if want is None:
            continue
        if not isinstance(want, dict) or set(want) - {"labels", "taints", "unschedulable"}:
            raise K8sArgumentError(
                "{} must be a dict with labels, taints and/or unschedulable, got {!r}".format(where, want),
                option="expected_nodes",
            )
        if not isinstance(want.get("labels") or {}, dict):
            raise K8sArgumentError(
                "{}.labels must be a dict of label: value".format(where), option="expected_nodes"
            )
        taints = want.get("taints")
        if taints is not None and not (
            isinstance(taints, list)
            and all(isinstance(t, dict) and t.get("key") and t.get("effect") for t in taints)
        ):
            raise K8sArgumentError(
                "{}.taints must be a list of {{key, value, effect}} (key and effect required), "
                "got {!r}".format(where, taints),
                option="expected_nodes",
            )
        if not isinstance(want.get("unschedulable", False), bool):
            raise K8sArgumentError(
                "{}.unschedulable must be true or false".format(where), option="expected_nodes"
            )


def pod_problems(pod, restart_threshold=3):
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    phase = status.get("phase")
    if phase == "Succeeded":
        return []
    found = []
    reasons = []
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for cstat in statuses:
        waiting = (cstat.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in BAD_WAITING_REASONS:
            reasons.append("container {} {}".format(cstat.get("name"), waiting["reason"]))
        restarts = cstat.get("restartCount") or 0
        if restart_threshold and restarts >= restart_threshold:
            reasons.append("container {} restarted {} times".format(cstat.get("name"), restarts))
    if meta.get("deletionTimestamp"):
        reasons.append("terminating since {}".format(meta["deletionTimestamp"]))
    elif phase != "Running":
        why = status.get("reason") or ""
        sched = condition(pod, "PodScheduled")
        if sched and sched.get("status") == "False":
            why = "unschedulable: {}".format(sched.get("message") or sched.get("reason"))
        reasons.append("phase {}{}".format(phase or "unknown", " ({})".format(why) if why else ""))
    elif not is_true(pod, "Ready"):
        reasons.append("not Ready")
    if reasons:
        found.append(problem("Pod", name, "; ".join(reasons), namespace))
    return found


def workload_summary(obj):
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return {
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "replicas": (obj.get("spec") or {}).get("replicas", 1),
        "ready_replicas": status.get("readyReplicas", 0),
        "ready": workload_is_ready(obj),
    }


def workload_problems(obj):
    info = workload_summary(obj)
    if info["ready"]:
        return []
    return [
        problem(
            info["kind"],
            info["name"],
            "{}/{} replicas ready".format(info["ready_replicas"], info["replicas"]),
            info["namespace"],
        )
    ]


def _under(path, root):
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def kind_node_path(host_path, host_path_root, kind_mount_root):
    """Where a host path under host_path_root is seen inside the kind node (None if outside):
    /srv/kind/solana/ledger with /srv/kind -> /mnt gives /mnt/solana/ledger."""
    host_path = os.path.normpath(host_path)
    root = os.path.normpath(host_path_root)
    if not _under(host_path, root):
        return None
    rel = host_path[len(root) :].lstrip("/")
    base = os.path.normpath(kind_mount_root)
    return base if not rel else base.rstrip("/") + "/" + rel


def pv_path(pv):
    spec = pv.get("spec") or {}
    return ((spec.get("hostPath") or {}).get("path")) or ((spec.get("local") or {}).get("path"))


def pv_problems(pv, host_path_root=None, kind_mount_root=None, expected_host_path=None):
    """A PV whose hostPath is not the kind-node view of its host path.

    With expected_host_path (the path on the host), the PV must point at exactly its
    translation under kind_mount_root. Otherwise a PV path under host_path_root is the host's
    path used inside the node (the untranslated-path bug), and one outside kind_mount_root
    is not on the mounted storage at all.
    """
    name = (pv.get("metadata") or {}).get("name")
    path = pv_path(pv)
    if path is None:
        if expected_host_path:
            return [problem("PersistentVolume", name, "has no hostPath/local path (expected one)")]
        return []
    path = os.path.normpath(path)
    if expected_host_path:
        if not host_path_root or not kind_mount_root:
            return []
        want = kind_node_path(expected_host_path, host_path_root, kind_mount_root)
        if want is None:
            return [
                problem(
                    "PersistentVolume",
                    name,
                    "expected host path {} is outside host_path_root {}".format(
                        expected_host_path, host_path_root
                    ),
                )
            ]
        if path != want:
            return [
                problem(
                    "PersistentVolume",
                    name,
                    "hostPath {} should be {} (host {} is mounted at {} in the kind node)".format(
                        path, want, expected_host_path, kind_mount_root
                    ),
                )
            ]
        return []
    if (
        host_path_root
        and kind_mount_root
        and _under(path, host_path_root)
        and not _under(path, kind_mount_root)
    ):
        return [
            problem(
                "PersistentVolume",
                name,
                "hostPath {} is a host path; inside the kind node it is {}".format(
                    path, kind_node_path(path, host_path_root, kind_mount_root)
                ),
            )
        ]
    if kind_mount_root and not _under(path, kind_mount_root):
        return [
            problem(
                "PersistentVolume",
                name,
                "hostPath {} is outside {}, the kind node's view of the cluster storage".format(
                    path, kind_mount_root
                ),
            )
        ]
    return []


def summarize_problems(problems, counts):
    """One human line: 'healthy: 2 nodes, 5 pods ...' or 'N problems: first; second ...'."""
    scope = ", ".join("{} {}".format(v, k) for k, v in counts.items())
    if not problems:
        return "healthy: " + scope
    shown = "; ".join(
        "{} {}: {}".format(
            p["kind"], (p["namespace"] + "/" if p.get("namespace") else "") + str(p["name"]), p["reason"]
        )
        for p in problems[:5]
    )
    more = " (and {} more)".format(len(problems) - 5) if len(problems) > 5 else ""
    return "{} problem(s) in {}: {}{}".format(len(problems), scope, shown, more)


def health_report(client, params):
    """The report of the ``cluster_health`` module: GET (and watch) requests only.

    params: namespaces, allow_missing_namespaces, nodes, expected_nodes, wait_timeout,
    restart_threshold, host_path_root, kind_mount_root, expected_pvs (missing keys mean "not
    given"). A namespace that does not exist fails (K8sNotFound listing those that do) unless
    allow_missing_namespaces; then it is reported in missing_namespaces.
    """
    namespaces = params.get("namespaces") or None
    only_nodes = params.get("nodes") or None
    expected_nodes = params.get("expected_nodes") or {}
    expected_pvs = params.get("expected_pvs") or {}
    host_root = params.get("host_path_root")
    mount_root = params.get("kind_mount_root")
    threshold = params.get("restart_threshold")
    threshold = 3 if threshold is None else threshold

    missing_namespaces = []
    for name in namespaces or []:
        try:
            client.get_namespace(name)
        except K8sNotFound:
            if not params.get("allow_missing_namespaces"):
                raise
            missing_namespaces.append(name)
    for name in only_nodes or []:
        client.get_node(name)  # unknown node: K8sNotFound listing the nodes that exist
    wanted = sorted(set(only_nodes or []) | set(expected_nodes))
    if params.get("wait_timeout"):
        predicate = named_ready(wanted, check=node_is_ready) if wanted else all_items(node_is_ready)
        try:
            nodes = client.watch_until("Node", predicate, timeout=params["wait_timeout"])["items"]
        except K8sTimeout:
            nodes, _rv = client.list("Node")  # report what is wrong instead of failing
    else:
        nodes, _rv = client.list("Node")
    if only_nodes:
        nodes = [n for n in nodes if object_key(n)[1] in only_nodes]

    problems = []
    node_info = [node_summary(n) for n in nodes]
    if not nodes and not only_nodes:
        problems.append(problem("Cluster", client.host, "no node is registered"))
    for node in nodes:
        cordon_expected = bool((expected_nodes.get(object_key(node)[1]) or {}).get("unschedulable"))
        problems.extend(node_problems(node, cordon_expected))
    problems.extend(expected_node_problems(node_info, expected_nodes))

    pods, workloads = [], []
    scopes = [None] if namespaces is None else [n for n in namespaces if n not in missing_namespaces]
    for namespace in scopes:
        pods.extend(client.list("Pod", namespace)[0])
        for kind in ("Deployment", "StatefulSet"):
            workloads.extend(client.list(kind, namespace)[0])
    phases = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase") or "Unknown"
        phases[phase] = phases.get(phase, 0) + 1
        problems.extend(pod_problems(pod, threshold))
    for obj in workloads:
        problems.extend(workload_problems(obj))

    pv_info = []
    if mount_root or expected_pvs:
        pvs, _rv = client.list("PersistentVolume")
        by_name = dict((object_key(p)[1], p) for p in pvs)
        for name in sorted(expected_pvs):
            if name not in by_name:
                problems.append(
                    problem(
                        "PersistentVolume",
                        name,
                        "expected PV does not exist (host path {})".format(expected_pvs[name]),
                    )
                )
        for pv in pvs:
            name = object_key(pv)[1]
            claim = (pv.get("spec") or {}).get("claimRef") or {}
            if namespaces and name not in expected_pvs and claim.get("namespace") not in namespaces:
                continue
            pv_info.append(
                {
                    "name": name,
                    "path": pv_path(pv),
                    "claim": "{}/{}".format(claim.get("namespace"), claim.get("name")) if claim else None,
                    "phase": (pv.get("status") or {}).get("phase"),
                }
            )
            problems.extend(pv_problems(pv, host_root, mount_root, expected_pvs.get(name)))

    counts = {
        "nodes": len(node_info),
        "pods": len(pods),
        "workloads": len(workloads),
        "persistent_volumes": len(pv_info),
    }
    return {
        "healthy": not problems,
        "problems": problems,
        "summary": summarize_problems(problems, counts),
        "nodes": node_info,
        "workloads": [workload_summary(w) for w in workloads],
        "pods": phases,
        "persistent_volumes": pv_info,
        "missing_namespaces": missing_namespaces,
        "api_server": client.host,
    }
