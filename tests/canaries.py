"""The one place the tests take secret values from (issue 20 item 4): recognisable canaries, new for
each test run and the same in every pytest-xdist worker of it (derived from xdist's run id), so a
scan at the end of the run (tests/reliability/test_secrets.py) can grep everything the run wrote
for them. A canary found anywhere but in the files that must hold it is a leak.

    from tests.canaries import GITLAB_TOKEN, HF_TOKEN, AWX_TOKEN
"""

import hashlib
import os
import uuid

# One value per run: xdist gives every worker the same PYTEST_XDIST_TESTRUNUID; a plain pytest
# run is one process, and a random id serves.
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or os.environ.setdefault(
    "STRATA_CANARY_RUN", uuid.uuid4().hex
)


def canary(prefix, name):
    """``<prefix>CANARY-<24 hex>``: the secret's usual shape, unique to this run and ``name``."""
    digest = hashlib.sha256(f"{RUN_ID}:{name}".encode()).hexdigest()[:24]
    return f"{prefix}CANARY-{digest}"


GITLAB_TOKEN = canary("glpat-", "gitlab")  # runner_isolation's GitLab stand-in and the role's env
HF_TOKEN = canary("hf_", "huggingface")  # data_miner's HF token Secret
AWX_TOKEN = canary("awx-", "awx")  # the AWX/controller credentials the job templates inject

ALL = {"gitlab_token": GITLAB_TOKEN, "hf_token": HF_TOKEN, "awx_token": AWX_TOKEN}
