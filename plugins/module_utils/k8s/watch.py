# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waits are watches: list, then watch from the list's resourceVersion, keep the current set of
objects, and return as soon as a PURE predicate over that set holds; re-list on 410 Gone; raise
K8sTimeout at the deadline with the last state seen. An API server that goes away mid-wait (restarted,
overloaded: refused connections, 429, 5xx) is tried again with a growing pause until it answers or the
deadline passes, then the watch resumes from the last resourceVersion (a restarted server answers 410
for one older than its cache: re-list). Those pauses are the only sleeps."""

import json
import time

from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import (
    K8sApiError,
    K8sGone,
    K8sTimeout,
    K8sUnreachable,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.library import urllib3
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import object_key, resource_path

# Answers of a server that is restarting or shedding load: wait and ask again.
TRANSIENT_STATUS = frozenset((429, 500, 502, 503, 504))
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0


def is_transient(exc):
    """True for an error a wait rides out: the server unreachable, 429 or 5xx (not 410: re-list)."""
    if isinstance(exc, K8sUnreachable):
        return True
    if isinstance(exc, K8sGone):
        return False
    return isinstance(exc, K8sApiError) and exc.details.get("status") in TRANSIENT_STATUS


def backoff_pause(failures, remaining):
    """Seconds to wait after ``failures`` failed tries in a row: doubling from BACKOFF_FIRST up to
    BACKOFF_MAX, never past the deadline (``remaining`` s away)."""
    return max(0.0, min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX, remaining))


class Outage:
    """The API server's current outage during a wait: since when, how many tries, the last error."""

    def __init__(self, clock):
        self.clock = clock
        self.since = None
        self.failures = 0
        self.error = None
        self.count = 0  # outages ridden out (the server answered again)

    def failed(self, exc):
        if self.since is None:
            self.since = self.clock()
        self.failures += 1
        self.error = exc

    def ended(self):
        if self.since is not None:
            self.count += 1
        self.since, self.failures, self.error = None, 0, None


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

    # Seams for the unit tests: the clock of deadlines and the pause between tries.
    _clock = staticmethod(time.monotonic)
    _sleep = staticmethod(time.sleep)

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
        Re-lists on 410 Gone. An unreachable server, 429 or 5xx is tried again after a pause
        (0.2 s doubling to 2 s) until the deadline. Returns a dict: items, resource_version,
        elapsed (s), events, relists, reconnects (outages ridden out), api_down_seconds.
        Raises K8sTimeout after ``timeout`` seconds, with ``summarize(items)`` (or the object
        names) of the last state seen; K8sUnreachable instead when the server was not
        answering at the deadline (with that last state too).
        """
        start = self._clock()
        deadline = start + timeout
        what = (
            description or getattr(predicate, "__doc__", None) or getattr(predicate, "__name__", "condition")
        ).strip()
        where = f"{kind} in namespace {namespace}" if namespace else kind
        wait = {"events": 0, "relists": -1, "down": 0.0, "empty": 0, "rv": None}
        outage = Outage(self._clock)
        state = {}

        def current():
            return sorted_items(state)

        def last_state():
            return summarize(current()) if summarize else ["/".join(filter(None, k)) for k in sorted(state)]

        def answered():
            if outage.since is not None:
                wait["down"] += self._clock() - outage.since
            outage.ended()

        def give_up():
            elapsed = round(self._clock() - start, 3)
            if outage.since is None:
                raise K8sTimeout(
                    f"timed out after {timeout} s waiting for {what} ({where}); last state: {last_state()}",
                    waited_for=what,
                    elapsed=elapsed,
                    last=last_state(),
                )
            down = round(self._clock() - outage.since, 1)
            raise K8sUnreachable(
                f"{outage.error} (not answering for the last {down} s of the {timeout} s wait for {what} "
                f"({where}); last state seen: {last_state()})",
                url=outage.error.details.get("url") or getattr(self, "host", None),
                cause=outage.error.details.get("cause") or str(outage.error),
                waited_for=what,
                elapsed=elapsed,
                unreachable_for=down,
                last=last_state(),
            )

        listed = False
        while True:
            try:
                if not listed:
                    items, wait["rv"] = self.list(kind, namespace, label_selector, field_selector)
                    state = dict((object_key(o), o) for o in items)
                    wait["relists"] += 1
                    listed = True
                    answered()
                if predicate(current()):
                    return dict(
                        items=current(),
                        resource_version=wait["rv"],
                        elapsed=round(self._clock() - start, 3),
                        events=wait["events"],
                        relists=wait["relists"],
                        reconnects=outage.count,
                        api_down_seconds=round(wait["down"], 3),
                    )
                remaining = deadline - self._clock()
                if remaining <= 0:
                    give_up()
                followed = self._follow(
                    kind,
                    namespace,
                    until=(predicate, deadline),
                    state=state,
                    wait=wait,
                    answered=answered,
                    label_selector=label_selector,
                    field_selector=field_selector,
                )
                if followed:
                    wait["empty"] = 0
                else:  # ended at once with nothing: do not spin on a server that closes watches
                    wait["empty"] += 1
                    self._sleep(backoff_pause(wait["empty"], deadline - self._clock()))
            except K8sGone:  # an answer: the server is back, but its cache starts after our version
                answered()
                listed = False
            except K8sApiError as exc:
                self._ride_out(exc, outage, deadline)
            except K8sUnreachable as exc:
                self._ride_out(exc, outage, deadline)
            if self._clock() >= deadline and (outage.since is not None or not listed):
                give_up()

    def _ride_out(self, exc, outage, deadline):
        """A failed call during a wait: re-raise it unless transient, else pause before the next try."""
        if not is_transient(exc):
            raise exc
        outage.failed(exc)
        self._sleep(backoff_pause(outage.failures, deadline - self._clock()))

    def _follow(self, kind, namespace, *, until, state, wait, answered, **selectors):
        """One watch from wait["rv"], applied to ``state`` until (predicate, deadline) = ``until``:
        the predicate holds, the deadline, or the stream's end; True when it delivered an event
        (bookmarks count). ``answered()`` is called once the server has answered."""
        predicate, deadline = until
        delivered = False
        stream = self._watch_stream(kind, namespace, wait["rv"], deadline - self._clock(), **selectors)
        for event in stream:
            answered()
            delivered = True
            etype = event.get("type")
            obj = event.get("object") or {}
            if etype == "ERROR":
                if obj.get("code") == 410:
                    raise K8sGone(obj.get("message", "resourceVersion too old"))
                raise K8sApiError(f"watch of {kind} failed: {obj.get('message')}", status=obj.get("code"))
            wait["rv"] = (obj.get("metadata") or {}).get("resourceVersion") or wait["rv"]
            if etype == "BOOKMARK":
                continue
            wait["events"] += 1
            obj.setdefault("kind", kind)
            if etype == "DELETED":
                state.pop(object_key(obj), None)
            else:
                state[object_key(obj)] = obj
            if predicate(sorted_items(state)) or self._clock() >= deadline:
                break
        answered()  # the watch was open (a dropped connection ends it quietly)
        return delivered


def sorted_items(state):
    return [state[k] for k in sorted(state)]
