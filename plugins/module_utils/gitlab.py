# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client of the GitLab runners REST API (https://docs.gitlab.com/api/runners/).

Plain HTTP through ``ansible.module_utils.urls.open_url``; the token goes in the
``PRIVATE-TOKEN`` header and nowhere else (never in a URL, a result or an error message).

* Lists are paginated: ``per_page=20`` and the ``X-Next-Page`` header are followed to the end.
* ``pause(id, paused)`` is ``PUT /runners/:id`` with a JSON body holding ``paused`` and
  nothing else: ``active`` is deprecated since GitLab 14.8 and never sent.
* ``running_jobs(id)`` is ``GET /runners/:id/jobs?status=running``. Jobs are only read, never
  cancelled.
* 429 answers are retried after their ``Retry-After`` (seconds or an HTTP date; capped by
  ``max_retry_wait``) up to ``max_retries`` times; 401, 403 and 404 raise their own typed
  errors with what to check.

Helpers raise ``GitLabError`` (or a subclass); a module's ``main()`` catches it once.
"""

import email.utils
import json
import time
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.urls import open_url

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

PER_PAGE = 20
# Runner fields never copied into results or state files (older GitLab returned the
# registration token in GET /runners/:id for administrators).
SECRET_FIELDS = ("token", "authentication_token", "registration_token", "token_expires_at")


class GitLabError(StrataError):
    """A request to the GitLab API failed (``status``: the HTTP status, when there was one)."""

    def __init__(self, msg, status=None, **details):
        super().__init__(msg, status=status, **details)
        self.status = status


class GitLabAuthError(GitLabError):
    """401: the token is missing, wrong, expired or revoked."""


class GitLabForbiddenError(GitLabError):
    """403: the token is valid but may not do this."""


class GitLabNotFoundError(GitLabError):
    """404: no such runner (or it is not visible to this token)."""


class GitLabRateLimitError(GitLabError):
    """429 more often than max_retries allows."""


def retry_after_seconds(value, now=None):
    """Seconds to wait from a Retry-After header value (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def public_fields(runner):
    """The runner's fields without secrets."""
    return {k: v for k, v in runner.items() if k not in SECRET_FIELDS}


class GitLabClient:
    def __init__(
        self,
        url,
        token,
        *,
        timeout=30,
        validate_certs=True,
        max_retries=5,
        max_retry_wait=60.0,
        default_retry_wait=5.0,
        sleep=time.sleep,
    ):
        if not url:
            raise GitLabError("gitlab_url is empty")
        if not token:
            raise GitLabAuthError(
                "no GitLab token: set gitlab_token (from a vault variable) or GITLAB_TOKEN in the environment"
            )
        url = url.rstrip("/")
        self.api = url if url.endswith("/api/v4") else url + "/api/v4"
        self._token = token
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.default_retry_wait = default_retry_wait
        self.sleep = sleep
        self.retries = []  # (method, path, seconds waited) for each 429 answered

    # --- transport ----------------------------------------------------------------------------
    def request(self, method, path, query=None, body=None):
        """One API call; returns (decoded JSON or None, headers dict with lower-case names)."""
        url = self.api + path
        if query:
            url += "?" + urlencode(query)
        headers = {"PRIVATE-TOKEN": self._token, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                resp = open_url(
                    url,
                    method=method,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    validate_certs=self.validate_certs,
                    follow_redirects="safe",
                )
                raw = resp.read()
                resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                break
            except HTTPError as exc:
                status = exc.code
                err_headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
                detail = self._detail(exc)
                if status == 429 and attempt < self.max_retries:
                    wait = retry_after_seconds(err_headers.get("retry-after"))
                    wait = self.default_retry_wait if wait is None else wait
                    wait = min(wait, self.max_retry_wait)
                    self.retries.append((method, path, wait))
                    attempt += 1
                    self.sleep(wait)
                    continue
                raise self._error(status, method, path, detail) from None
            except URLError as exc:
                raise GitLabError(
                    f"{method} {path}: cannot reach GitLab at {self.api}: {exc.reason}"
                ) from None
            except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
                raise GitLabError(f"{method} {path}: request to {self.api} failed: {exc}") from None
        if not raw:
            return None, resp_headers
        try:
            return json.loads(raw.decode("utf-8")), resp_headers
        except ValueError:
            raise GitLabError(f"{method} {path}: GitLab answered something that is not JSON") from None

    @staticmethod
    def _detail(exc):
        try:
            raw = exc.read()
        except Exception:  # pragma: no cover - the body is optional
            return ""
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            return raw.decode("utf-8", "replace")[:200]
        if isinstance(body, dict):
            return str(body.get("message") or body.get("error") or body)
        return str(body)

    def _error(self, status, method, path, detail):
        where = f"{method} {path}"
        suffix = (": " + detail) if detail else ""
        if status == 401:
            return GitLabAuthError(
                f"{where}: 401 Unauthorized: the token is missing, wrong, expired or revoked{suffix}",
                status,
            )
        if status == 403:
            return GitLabForbiddenError(
                f"{where}: 403 Forbidden: the token may not do this (listing all runners needs an "
                "administrator; a runner can be changed by an administrator or a maintainer of its "
                f"group/project; the token needs the api scope){suffix}",
                status,
            )
        if status == 404:
            return GitLabNotFoundError(
                f"{where}: 404 Not Found: no such runner visible to this token{suffix}", status
            )
        if status == 429:
            return GitLabRateLimitError(
                f"{where}: 429 Too Many Requests after {self.max_retries} retries{suffix}", status
            )
        return GitLabError(f"{where}: HTTP {status}{suffix}", status)

    def paginate(self, path, query=None):
        """Every item of a list endpoint, following X-Next-Page with per_page=20."""
        items = []
        page = 1
        while True:
            params = dict(query or {})
            params.update(page=page, per_page=PER_PAGE)
            body, headers = self.request("GET", path, params)
            if not isinstance(body, list):
                raise GitLabError(f"GET {path}: expected a list, got {type(body).__name__}")
            items.extend(body)
            next_page = (headers.get("x-next-page") or "").strip()
            if not next_page:
                return items
            try:
                next_page = int(next_page)
            except ValueError:
                raise GitLabError(f"GET {path}: bad X-Next-Page header {next_page!r}") from None
            if next_page <= page:
                raise GitLabError(f"GET {path}: X-Next-Page {next_page} does not advance from page {page}")
            page = next_page

    # --- runners ------------------------------------------------------------------------------
    def list_runners(self, scope="all", runner_type=None, status=None, paused=None, tag_list=None):
        """``GET /runners/all`` (administrators: every runner) or ``GET /runners`` (the token's own)."""
        query = {}
        if runner_type:
            query["type"] = runner_type
        if status:
            query["status"] = status
        if paused is not None:
            query["paused"] = "true" if paused else "false"
        if tag_list:
            query["tag_list"] = ",".join(tag_list)
        path = "/runners/all" if scope == "all" else "/runners"
        return [public_fields(r) for r in self.paginate(path, query)]

    def get_runner(self, runner_id):
        body = self.request("GET", f"/runners/{quote(str(runner_id))}")[0]
        if not isinstance(body, dict):
            raise GitLabError(f"GET /runners/{runner_id}: expected an object")
        return public_fields(body)

    def set_paused(self, runner_id, paused):
        """``PUT /runners/:id`` with ``{"paused": bool}`` only; returns the runner after it."""
        body = self.request("PUT", f"/runners/{quote(str(runner_id))}", body={"paused": bool(paused)})[0]
        if not isinstance(body, dict):
            raise GitLabError(f"PUT /runners/{runner_id}: expected an object")
        return public_fields(body)

    def running_jobs(self, runner_id):
        jobs = self.paginate(f"/runners/{quote(str(runner_id))}/jobs", {"status": "running"})
        return [
            {
                "id": j.get("id"),
                "status": j.get("status"),
                "name": j.get("name"),
                "project": (j.get("project") or {}).get("path_with_namespace"),
                "web_url": j.get("web_url"),
            }
            for j in jobs
            if isinstance(j, dict)
        ]
