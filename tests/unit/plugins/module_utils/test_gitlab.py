"""gitlab.py without a server: Retry-After parsing, secrets kept out, token checks."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # an HTTP date, 10 s after "now"
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value, seconds):
    assert gl.retry_after_seconds(value, now=1445412480.0) == seconds


def test_public_fields_drop_tokens():
    runner = {"id": 7, "token": "glrt-x", "registration_token": "r", "paused": False}
    assert gl.public_fields(runner) == {"id": 7, "paused": False}


def test_client_needs_url_and_token():
    with pytest.raises(gl.GitLabError, match="gitlab_url is empty"):
        gl.GitLabClient("", "t")
    with pytest.raises(gl.GitLabAuthError, match="GITLAB_TOKEN"):
        gl.GitLabClient("https://gitlab.example", "")
    assert gl.GitLabClient("https://gitlab.example/", "t").api == "https://gitlab.example/api/v4"
    assert gl.GitLabClient("https://gitlab.example/api/v4", "t").api == "https://gitlab.example/api/v4"
