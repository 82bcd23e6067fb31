# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waits are watches: list, then watch from the list's resourceVersion, keep the current set of
objects, and return as soon as a PURE predicate over that set holds; re-list on 410 Gone; raise
K8sTimeout at the deadline with the last state seen. There are no fixed sleeps."""

import json
import time

from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import K8sApiError, K8sGone, K8sTimeout
from ansible_collections.strata.ops.plugins.module_utils.k8s.library import urllib3
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import object_key, resource_path


class Watching:
    """watch_until for K8sClient (which provides ``request``, ``list`` and ``api_timeout``)."""

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
                waited_for = what.strip()
                where = " in namespace " + namespace if namespace else ""
                raise K8sTimeout(
                    f"timed out after {timeout} s waiting for {waited_for} ({kind}{where}); "
                    f"last state: {last}",
                    waited_for=waited_for,
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
                            f"watch of {kind} failed: {obj.get('message')}",
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
