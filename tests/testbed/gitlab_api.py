#!/usr/bin/env python3
"""STAND-IN for the GitLab runners REST API (a real GitLab cannot run on this test bed).

Implements what strata.ops asks GitLab, with the request and answer shapes documented at
https://docs.gitlab.com/api/runners/ and https://docs.gitlab.com/api/rest/#pagination:

``GET /api/v4/runners/all`` (administrators only, else 403) and ``GET /api/v4/runners``
    filters ``type`` (instance_type, group_type, project_type), ``status`` (online, offline,
    stale, never_contacted), ``paused`` (true/false), ``tag_list`` (comma-separated, all must
    match); offset pagination ``page`` / ``per_page`` (default 20, max 100) with ``X-Page``,
    ``X-Per-Page``, ``X-Next-Page`` (empty on the last page), ``X-Prev-Page``, ``X-Total``,
    ``X-Total-Pages`` headers.
``GET /api/v4/runners/:id`` -> the runner's details (404 when unknown).
``PUT /api/v4/runners/:id`` with ``paused`` (JSON or form body) -> the runner after it. As OUR
    rule (GitLab itself still accepts it), a body with the deprecated ``active`` is rejected
    with 400, and so is a body with no known attribute.
``GET /api/v4/runners/:id/jobs?status=running`` -> the runner's jobs with that status, paginated.
Errors: 401 ``{"message": "401 Unauthorized"}`` without or with a wrong ``PRIVATE-TOKEN``;
403 for ``/runners/all`` with a non-admin token and for runners in ``forbidden``; 404
``{"message": "404 Runner Not Found"}``; 429 with ``Retry-After`` for the next ``throttle``
requests (``stand_in.throttle(n, retry_after)``).

Every request is recorded (``requests``: method, path, query, json body, whether the token
was right) so tests can assert what was sent. ``jobs_delay`` makes the jobs endpoint answer
slowly (a test can kill the client in the middle). Jobs finish by themselves at ``finish_at``
(a ``time.monotonic()`` value) or by ``finish_jobs(runner_id)``.

Use from tests::

    with GitLabStandIn(token="glpat-test") as gitlab:
        gitlab.add_runner(7, description="bare-metal-7", tag_list=["metal"])
        gitlab.url  # http://127.0.0.1:<port>
"""

import json
import threading
import time
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from http_stand_in import HTTPStandIn, QuietHandler

PER_PAGE_DEFAULT = 20
PER_PAGE_MAX = 100
# what PUT /api/v4/runners/:id takes
UPDATABLE_ATTRIBUTES = {
    "paused",
    "description",
    "tag_list",
    "run_untagged",
    "locked",
    "access_level",
    "maximum_timeout",
    "maintenance_note",
}


class GitLabStandIn(HTTPStandIn):
    def __init__(self, *, token="glpat-stand-in", admin=True, host="127.0.0.1", port=0):
        super().__init__(self._handler(), host=host, port=port)
        self.token = token
        self.admin = admin
        self.runners = {}  # id -> dict
        self.jobs = {}  # runner id -> list of job dicts (with "finish_at")
        self.forbidden = set()  # runner ids this token may not see or change (403)
        self.requests = []
        self.jobs_delay = 0.0
        self._throttle = []  # Retry-After values of the next 429 answers
        self._lock = threading.Lock()

    # --- set-up -------------------------------------------------------------------------------
    def add_runner(self, runner_id, *, paused=False, runner_type="instance_type", status="online", **fields):
        runner = {
            "id": runner_id,
            "description": fields.pop("description", f"runner-{runner_id}"),
            "ip_address": f"10.0.0.{runner_id % 250}",
            "active": not paused,
            "paused": paused,
            "is_shared": runner_type == "instance_type",
            "runner_type": runner_type,
            "name": fields.pop("name", "gitlab-runner"),
            "online": status == "online",
            "status": status,
            "tag_list": fields.pop("tag_list", []),
            "token": f"glrt-SECRET-{runner_id}",  # older GitLab showed it to admins
        }
        runner.update(fields)
        self.runners[runner_id] = runner
        self.jobs.setdefault(runner_id, [])
        return runner

    def add_job(self, runner_id, job_id, *, duration=None, status="running"):
        finish_at = None if duration is None else time.monotonic() + duration
        self.jobs.setdefault(runner_id, []).append(
            {"id": job_id, "status": status, "name": f"job-{job_id}", "finish_at": finish_at}
        )

    def finish_jobs(self, runner_id):
        for job in self.jobs.get(runner_id, []):
            job["status"] = "success"

    def throttle(self, count, retry_after="1"):
        self._throttle.extend([retry_after] * count)

    def requests_for(self, method=None, path=None):
        return [
            r
            for r in self.requests
            if (method is None or r["method"] == method) and (path is None or r["path"] == path)
        ]

    # --- protocol -----------------------------------------------------------------------------
    def _job_view(self, job):
        if (
            job["status"] == "running"
            and job["finish_at"] is not None
            and time.monotonic() >= job["finish_at"]
        ):
            job["status"] = "success"
        return {k: v for k, v in job.items() if k != "finish_at"}

    @staticmethod
    def _runner_view(runner, detail):
        keys = ("id", "description", "ip_address", "active", "paused", "is_shared", "runner_type", "name")
        keys += ("online", "status")
        view = {k: runner[k] for k in keys}
        if detail:
            view.update({k: v for k, v in runner.items() if k not in view})
        return view

    def _paginate(self, items, query):
        def number(name, default):
            try:
                return max(1, int(query.get(name, [default])[0]))
            except ValueError:
                return default

        per_page = min(number("per_page", PER_PAGE_DEFAULT), PER_PAGE_MAX)
        page = number("page", 1)
        total = len(items)
        pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(total),
            "X-Total-Pages": str(pages),
            "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        return chunk, headers

    def answer(self, method, path, query, body, token):
        """(status, json body, extra headers) for one request."""
        with self._lock:
            if self._throttle:
                return 429, {"message": "429 Too Many Requests"}, {"Retry-After": self._throttle.pop(0)}
        if token != self.token:
            return 401, {"message": "401 Unauthorized"}, {}
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "v4"] or len(parts) < 3 or parts[2] != "runners":
            return 404, {"error": "404 Not Found"}, {}
        rest = tuple(parts[3:])
        if method == "GET" and rest in ((), ("all",)):
            if rest == ("all",) and not self.admin:
                return 403, {"message": "403 Forbidden"}, {}
            return self._list(query, only_visible=rest == ())
        return self._answer_runner(method, rest, query, body)

    def _answer_runner(self, method, rest, query, body):
        """The answer for ``/api/v4/runners/:id`` and below (``rest``: the path from :id on)."""
        try:
            runner_id = int(rest[0])
        except (IndexError, ValueError):
            return 404, {"error": "404 Not Found"}, {}
        runner = self.runners.get(runner_id)
        if runner is None:
            return 404, {"message": "404 Runner Not Found"}, {}
        if runner_id in self.forbidden:
            return 403, {"message": "403 Forbidden"}, {}
        route = self.RUNNER_ROUTES.get((method, rest[1:]))
        if route is None:
            return 405, {"error": "405 Method Not Allowed"}, {}
        return route(self, runner_id, runner, query, body)

    def _runner_details(self, _runner_id, runner, _query, _body):
        return 200, self._runner_view(runner, True), {}

    def _update_runner(self, _runner_id, runner, _query, body):
        if not isinstance(body, dict):
            return 400, {"error": "body must be an object"}, {}
        if "active" in body:
            return 400, {"error": "active is deprecated (since GitLab 14.8): send paused"}, {}
        unknown = sorted(set(body) - UPDATABLE_ATTRIBUTES)
        if unknown or not body:
            return 400, {"error": "unknown or missing attributes: {}".format(", ".join(unknown))}, {}
        if "paused" in body:
            paused = body["paused"]
            if isinstance(paused, str):
                paused = paused.lower() == "true"
            runner["paused"] = bool(paused)
            runner["active"] = not runner["paused"]
        return 200, self._runner_view(runner, True), {}

    def _runner_jobs(self, runner_id, _runner, query, _body):
        if self.jobs_delay:
            time.sleep(self.jobs_delay)
        status = query.get("status", [None])[0]
        jobs = [self._job_view(j) for j in self.jobs.get(runner_id, [])]
        if status:
            jobs = [j for j in jobs if j["status"] == status]
        chunk, headers = self._paginate(jobs, query)
        return 200, chunk, headers

    # (method, path below /api/v4/runners/:id) -> handler(self, runner_id, runner, query, body)
    RUNNER_ROUTES: ClassVar[dict] = {
        ("GET", ()): _runner_details,
        ("PUT", ()): _update_runner,
        ("GET", ("jobs",)): _runner_jobs,
    }

    def _list(self, query, only_visible):
        runners = [
            r for _, r in sorted(self.runners.items()) if not (only_visible and r["id"] in self.forbidden)
        ]
        if "type" in query:
            runners = [r for r in runners if r["runner_type"] == query["type"][0]]
        if "status" in query:
            runners = [r for r in runners if r["status"] == query["status"][0]]
        if "paused" in query:
            want = query["paused"][0] == "true"
            runners = [r for r in runners if r["paused"] == want]
        if "tag_list" in query:
            tags = set(query["tag_list"][0].split(","))
            runners = [r for r in runners if tags <= set(r["tag_list"])]
        chunk, headers = self._paginate([self._runner_view(r, False) for r in runners], query)
        return 200, chunk, headers

    def _handler(self):
        stand_in = self

        class Handler(QuietHandler):
            def _serve(self, method):
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = None
                if raw:
                    ctype = self.headers.get("Content-Type", "")
                    try:
                        if "json" in ctype:
                            body = json.loads(raw.decode("utf-8"))
                        else:
                            body = {k: v[0] for k, v in parse_qs(raw.decode("utf-8")).items()}
                    except ValueError:
                        body = "<not json>"
                token = self.headers.get("PRIVATE-TOKEN")
                stand_in.requests.append(
                    {
                        "method": method,
                        "path": split.path,
                        "query": {k: v[0] for k, v in query.items()},
                        "body": body,
                        "token_ok": token == stand_in.token,
                        "headers": {k: v for k, v in self.headers.items() if k.lower() != "private-token"},
                    }
                )
                status, payload, headers = stand_in.answer(method, split.path, query, body, token)
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_PUT(self):
                self._serve("PUT")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        return Handler


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Stand-in for the GitLab runners REST API")
    parser.add_argument("--port", type=int, default=8929)
    parser.add_argument("--token", default="glpat-stand-in")
    parser.add_argument("--runners", type=int, default=3, help="runners 1..N, online, not paused")
    args = parser.parse_args()
    api = GitLabStandIn(token=args.token, port=args.port)
    for i in range(1, args.runners + 1):
        api.add_runner(i)
    print(f"GitLab runners API stand-in on {api.url}/api/v4 (token {args.token})", flush=True)
    api.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.stop()
