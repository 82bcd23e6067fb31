"""A GitLab runners API in memory with the methods of gitlab.GitLabClient that runner_isolation
uses (get_runner, set_paused, running_jobs, list_runners), their return shapes (secrets left out,
as public_fields does) and typed errors, logging every call in a shared Journal
(tests/unit/fakes/journal.py).

Runners carry ``paused`` and ``active`` as GitLab >= 14.8 reports them (``active`` is its
negation); ``legacy=True`` drops ``paused`` from the answers (GitLab before 14.8). Running jobs
are given per runner with the number of ``running_jobs`` answers they still show up in.
"""

import copy

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl


def runner(runner_id, *, paused=False, description=None, token="glrt-secret-token"):
    return {
        "id": runner_id,
        "description": description or f"runner-{runner_id}",
        "paused": paused,
        "active": not paused,
        "status": "online",
        "runner_type": "instance_type",
        "token": token,  # never returned: public_fields drops it
    }


class FakeGitLab:
    def __init__(self, journal, runners=(), jobs=None, legacy=False):
        """``jobs``: runner id -> [(job dict, how many running_jobs answers still list it)]."""
        self.journal = journal
        self.runners = {r["id"]: copy.deepcopy(r) for r in runners}
        self.jobs = {
            rid: [[copy.deepcopy(job), left] for job, left in entries]
            for rid, entries in (jobs or {}).items()
        }
        self.legacy = legacy

    def _find(self, runner_id, method, path):
        try:
            return self.runners[runner_id]
        except KeyError:
            raise gl.GitLabNotFoundError(
                f"{method} {path}: 404 Not Found: no such runner visible to this token: 404 Not found", 404
            ) from None

    def _answer(self, found):
        body = gl.public_fields(copy.deepcopy(found))
        if self.legacy:
            body.pop("paused", None)
        return body

    def snapshot(self):
        return {
            rid: {"paused": r["paused"], "active": r["active"]} for rid, r in sorted(self.runners.items())
        }

    # --- GitLabClient's methods -------------------------------------------------------------
    def get_runner(self, runner_id):
        path = f"/runners/{runner_id}"
        return self.journal.call(
            "gitlab",
            "get_runner",
            f"runner {runner_id}",
            apply=lambda: self._answer(self._find(runner_id, "GET", path)),
        )

    def set_paused(self, runner_id, paused):
        path = f"/runners/{runner_id}"

        def apply():
            found = self._find(runner_id, "PUT", path)
            found["paused"] = bool(paused)
            found["active"] = not paused
            return self._answer(found)

        return self.journal.call(
            "gitlab", "set_paused", f"runner {runner_id}", bool(paused), changes=True, apply=apply
        )

    def running_jobs(self, runner_id):
        path = f"/runners/{runner_id}/jobs"

        def apply():
            self._find(runner_id, "GET", path)
            entries = self.jobs.get(runner_id) or []
            running = [dict(job, status="running") for job, left in entries if left > 0]
            for entry in entries:
                entry[1] -= 1
            return running

        return self.journal.call("gitlab", "running_jobs", f"runner {runner_id}", apply=apply)

    def list_runners(self, scope="all", runner_type=None, status=None, paused=None, tag_list=None):
        def apply():
            found = [
                r
                for r in self.runners.values()
                if (paused is None or r["paused"] == paused)
                and (runner_type is None or r.get("runner_type") == runner_type)
                and (status is None or r.get("status") == status)
            ]
            return [self._answer(r) for r in found]

        return self.journal.call("gitlab", "list_runners", scope, tag_list, apply=apply)
