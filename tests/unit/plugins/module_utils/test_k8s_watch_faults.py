"""watch_until when the API server goes away mid-wait (issue 20 item 6): refused connections, 429
and 5xx are tried again with a growing pause until the deadline, the watch resumes from the last
resourceVersion, a 410 after a restart re-lists, and a server still down at the deadline is a
K8sUnreachable carrying the last state seen. Pure: scripted list/watch answers and a fake clock
(the pauses advance it), in the style of kubernetes.core's tests/unit/module_utils/test_waiter.py."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils.k8s import watch

from .test_k8s import ev, pod

URL = "https://127.0.0.1:32764"


def refused():
    return k8s.K8sUnreachable(
        f"Kubernetes API server {URL} (lab) is unreachable: connection refused", url=URL, cause="refused"
    )


def status(code):
    return k8s.K8sApiError(f"GET /api/v1/pods failed with HTTP {code}", status=code)


class FaultyClient(k8s.K8sClient):
    """list() and _watch_stream() answer from scripts whose entries may be exceptions (raised when
    the call is made); time is a counter that only the pauses (and ``tick`` per call) move."""

    def __init__(self, lists, streams, tick=0.0):  # pylint: disable=super-init-not-called
        self.lists = list(lists)
        self.streams = list(streams)
        self.now = 0.0
        self.tick = tick
        self.pauses = []
        self.watched_from = []
        self.list_calls = 0

    def _clock(self):
        return self.now

    def _sleep(self, seconds):
        self.pauses.append(round(seconds, 3))
        self.now += seconds

    def list(self, kind, namespace=None, label_selector=None, field_selector=None):
        self.list_calls += 1
        self.now += self.tick
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _watch_stream(self, kind, namespace, resource_version, seconds, **_kw):
        self.watched_from.append(resource_version)
        self.now += self.tick
        if self.streams and isinstance(self.streams[0], Exception):
            raise self.streams.pop(0)
        yield from self.streams.pop(0) if self.streams else []


def test_backoff_doubles_to_the_cap_and_never_past_the_deadline():
    assert [watch.backoff_pause(n, 100) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert watch.backoff_pause(5, 0.5) == 0.5
    assert watch.backoff_pause(1, -3) == 0.0


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (refused(), True),
        (status(429), True),
        (status(503), True),
        (status(500), True),
        (status(404), False),
        (status(400), False),
        (k8s.K8sGone("too old", status=410), False),
        (k8s.K8sAuthError("401", status=401), False),
    ],
)
def test_which_errors_a_wait_rides_out(exc, transient):
    assert watch.is_transient(exc) is transient


def test_server_gone_mid_watch_then_back_resumes_from_the_last_version():
    # the pod goes away while the server is down: the resumed watch delivers the DELETED event
    client = FaultyClient(
        [([pod("a"), pod("b")], "10")],
        [[ev("DELETED", "a", "11")], refused(), refused(), status(503), [ev("DELETED", "b", "20")]],
    )
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=30)
    assert result["items"] == []
    assert client.watched_from == ["10", "11", "11", "11", "11"]
    assert client.pauses == [0.2, 0.4, 0.8]
    assert result["reconnects"] == 1
    assert result["api_down_seconds"] == pytest.approx(1.4)
    assert result["relists"] == 0
    assert result["events"] == 2


def test_gone_after_a_restart_relists_and_sees_what_happened_meanwhile():
    client = FaultyClient(
        [([pod("a")], "10"), refused(), ([], "90")],
        [refused(), k8s.K8sGone("too old resource version", status=410)],
    )
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=30)
    assert result["relists"] == 1
    assert result["resource_version"] == "90"
    assert result["reconnects"] == 2  # the watch's refusal, then the re-list's
    assert client.list_calls == 3


def test_a_429_event_in_the_stream_is_ridden_out():
    client = FaultyClient(
        [([pod("a")], "10")],
        [
            [{"type": "ERROR", "object": {"code": 429, "message": "too many requests"}}],
            [ev("DELETED", "a", "12")],
        ],
    )
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=30)
    assert result["items"] == []
    assert client.pauses == [0.2]


def test_server_down_at_the_start_is_waited_for():
    client = FaultyClient([refused(), refused(), ([], "5")], [])
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=30)
    assert result["reconnects"] == 1
    assert client.pauses == [0.2, 0.4]


def test_server_down_past_the_deadline_is_unreachable_with_the_last_state():
    client = FaultyClient([([pod("a")], "10")], [refused()] * 50)
    with pytest.raises(k8s.K8sUnreachable) as err:
        client.watch_until("Pod", k8s.no_items, "ns", timeout=5, description="no pod left")
    details = err.value.details
    assert details["url"] == URL
    assert details["last"] == ["ns/a"]
    assert details["waited_for"] == "no pod left"
    assert details["unreachable_for"] == pytest.approx(5.0)
    assert client.now == pytest.approx(5.0)  # the pauses stopped at the deadline
    assert URL in str(err.value)
    assert "no pod left" in str(err.value)
    assert "last state seen: ['ns/a']" in str(err.value)


def test_server_back_but_condition_not_met_is_a_timeout_not_unreachable():
    client = FaultyClient([([pod("a")], "10")], [refused(), [ev("MODIFIED", "a", "11")]], tick=0.5)
    with pytest.raises(k8s.K8sTimeout) as err:
        client.watch_until("Pod", k8s.no_items, "ns", timeout=3)
    assert err.value.details["last"] == ["ns/a"]


def test_other_errors_are_not_retried():
    client = FaultyClient([([pod("a")], "10")], [k8s.K8sAuthError("401 Unauthorized", status=401)])
    with pytest.raises(k8s.K8sAuthError):
        client.watch_until("Pod", k8s.no_items, "ns", timeout=30)
    assert client.pauses == []


def test_empty_streams_do_not_spin():
    # a server that closes every watch at once: paused between tries, not a busy loop
    client = FaultyClient([([pod("a")], "10")], [[]] * 100)
    with pytest.raises(k8s.K8sTimeout):
        client.watch_until("Pod", k8s.no_items, "ns", timeout=4)
    assert len(client.watched_from) < 10
    assert client.pauses[:4] == [0.2, 0.4, 0.8, 1.6]
