# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""K8sClient: requests through the kubernetes library's configured urllib3 pool, plain dicts in
and out, typed errors; reads, patches, scale, and (watch.py) watch-based waits."""

import json
import time
from urllib.parse import urlencode

from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import (
    CLUSTER_HINT,
    K8sApiError,
    K8sAuthError,
    K8sConflict,
    K8sError,
    K8sGone,
    K8sNotFound,
    K8sUnreachable,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.library import kubernetes, urllib3
from ansible_collections.strata.ops.plugins.module_utils.k8s.plainconfig import PlainConfiguration
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import (
    PATCH_TYPES,
    RESOURCES,
    SCALABLE,
    object_key,
    object_ref,
    resource_path,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.watch import Watching
from ansible_collections.strata.ops.plugins.module_utils.k8s_options import DEFAULT_API_TIMEOUT


def object_not_found(kind, name, namespace):
    ref = object_ref(kind, name, namespace)
    return K8sNotFound(f"{ref} does not exist", kind=kind, name=name, namespace=namespace)


class K8sClient(Watching):
    """Thin REST client over the kubernetes library's configured urllib3 pool; waits are watch.py's."""

    def __init__(self, configuration, source="", api_timeout=DEFAULT_API_TIMEOUT, context=None):
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self.source = source
        self.context = context
        self.api_timeout = api_timeout
        if isinstance(configuration, PlainConfiguration):
            self.pool = configuration.pool_manager()
        else:
            self.pool = kubernetes().rest.RESTClientObject(configuration).pool_manager

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
            why = f"connection timed out after {self.api_timeout} s (host down or filtered?)"
        elif isinstance(cause, urllib3.exceptions.SSLError):
            why = f"TLS failed ({text}): the kubeconfig's CA or server does not match this cluster"
        elif "Name or service not known" in text or "resolution" in text.lower():
            why = "the host name does not resolve"
        else:
            why = text
        return K8sUnreachable(
            f"Kubernetes API server {self.host} ({self.source}) is unreachable: {why}; "
            f"start the cluster ({CLUSTER_HINT}) or fix the server URL in the kubeconfig",
            url=self.host,
            cause=why,
        )

    def _raise_for_status(self, status, payload, method, path):
        body = payload if isinstance(payload, dict) else {}
        message = body.get("message") or (payload if isinstance(payload, str) else "") or ""
        api_reason = body.get("reason") or ""
        if status == 401:
            raise K8sAuthError(
                f"the API server {self.host} rejected the credentials of {self.source} (401 Unauthorized): "
                "the token or client certificate is expired, revoked or from another cluster; fetch a fresh "
                "kubeconfig",
                status=status,
            )
        if status == 403:
            raise K8sAuthError(
                f"{method} {path} is forbidden for the user of {self.source}: {message} "
                "(grant the RBAC permission or use another context)",
                status=status,
            )
        if status == 404:
            raise K8sNotFound(f"{method} {path}: not found ({message})", status=status)
        if status == 409:
            raise K8sConflict(f"{method} {path}: conflict: {message}", status=status)
        if status == 410:
            raise K8sGone(f"{method} {path}: gone: {message}", status=status, api_reason=api_reason)
        raise K8sApiError(
            f"{method} {path} failed with HTTP {status} {api_reason}: {message}",
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
                f"Kubernetes API server {self.host} did not answer {method} {path} "
                f"within {self.api_timeout} s (api_timeout)",
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
            raise object_not_found(kind, name, namespace) from None

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
            noun = kind.lower()
            listed = ", ".join(existing) or none_text
            raise K8sNotFound(
                f"{noun} {name!r} does not exist in the cluster ({self.source}); {noun}s: {listed}",
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
            raise K8sError(f"patch_type must be one of {', '.join(PATCH_TYPES)}")
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
            raise object_not_found(kind, name, namespace) from None

    def scale(self, kind, name, namespace, replicas, dry_run=False):
        """Set spec.replicas through the scale subresource; returns (before, after)."""
        if kind not in SCALABLE:
            raise K8sError(f"cannot scale a {kind}: only {', '.join(SCALABLE)}")
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
