"""Secrets (issue 20 item 4): the integration tests take every secret from tests/canaries.py
(recognisable canaries: glpat-CANARY-..., hf_CANARY-..., awx-CANARY-...), and this file checks
that none of them, nor the lab kubeconfig's real client key (base64 and PEM forms), is in
anything a run wrote, outside the files that must hold them, which are 0600 and ours.

The scan is a test, run as its own step AFTER the suite (`pytest tests/reliability/test_secrets.py`
once `make integration` is done), not a pytest_sessionfinish hook: a hook's failure does not fail
the run's tests, and under xdist no test is guaranteed to run last. It looks for the canary
PATTERN, so the values of the run before (another process, another run id) are found too.

The static checks: every task of roles/ and playbooks/ that passes a variable named like a secret
has no_log, and every module option with no_log=True says so in its documentation.
"""

import base64
import glob
import os
import re
import stat
import subprocess
import time

import pytest
import yaml

from tests import canaries
from tests.integration.conftest import CACHE, REPO

CANARY_RE = re.compile(rb"(?:glpat-|hf_|awx-)CANARY-[0-9a-f]{24}")
LAB_KUBECONFIG = os.path.join(CACHE, "controlplane", "strata-lab.kubeconfig")
KWOK_CLUSTER = os.path.join(CACHE, "controlplane", "kwok-workdir", "clusters", "strata-lab")
LAB_HOSTS = ("strata-lab-1", "strata-lab-2")
MAX_BYTES = 64 << 20  # binaries and images are not where a secret leaks to
SINCE_HOURS = float(os.environ.get("STRATA_SECRET_SCAN_HOURS", "24"))
# Where a secret must be: the cluster's own store and credentials (its etcd holds the HF token
# Secret; its pki and kubeconfigs the client key). Each such file must be 0600 (or in a 0700
# directory) and ours.
HOLDERS = (
    os.path.join(KWOK_CLUSTER, "etcd") + os.sep,
    os.path.join(KWOK_CLUSTER, "pki") + os.sep,
    os.path.join(KWOK_CLUSTER, "kubeconfig.yaml"),
    LAB_KUBECONFIG,
    os.path.join(CACHE, "node", "kubeconfig"),  # the real kubelet node's (tests/testbed/node)
)
# another run's canary, built here so that this file (and every copy of it) holds none
OLD_CANARY = "hf_" + "CANARY-" + "0123456789abcdef" + "01234567"
PLANTED = "test_a_planted_canary"  # this file's own planted canaries (basetemp dirs of that test)
SKIP_DIRS = ("bin", "cache", "etcd-3.5.16", "etcd-trixie", "kwok-v0.8.0", "node-images", "images")


# --------------------------------------------------------------------------- the scanner


def key_needles(kubeconfig=LAB_KUBECONFIG):
    """The client key of ``kubeconfig`` as it may appear: its client-key-data (base64 of the PEM)
    and the PEM body's lines (the key's own base64)."""
    if not os.path.exists(kubeconfig):
        return {}
    with open(kubeconfig) as handle:
        doc = yaml.safe_load(handle)
    needles = {}
    for entry in doc.get("users") or []:
        user = entry.get("user") or {}
        data = user.get("client-key-data")
        if not data and user.get("client-key"):
            with open(os.path.join(os.path.dirname(kubeconfig), user["client-key"]), "rb") as key:
                data = base64.b64encode(key.read()).decode()
        if data:
            needles["kubeconfig client key (base64)"] = data.encode()
            pem = base64.b64decode(data).decode()
            body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
            # one full 64-char line from the middle: the PEM form, whatever its line ends
            needles["kubeconfig client key (PEM)"] = body[len(body) // 2].encode()
    return needles


def file_hits(path, needles):
    """The names of the needles (and canaries found by pattern) in the file at ``path``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES)
    except OSError:
        return []
    hits = sorted({m.decode() for m in CANARY_RE.findall(data)})
    hits += [name for name, needle in needles.items() if needle in data]
    return hits


def walk(root, since=None):
    """Regular files under ``root`` (changed at or after ``since``, when given), binaries' and
    images' directories left out."""
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(PLANTED)]
        for name in files:
            path = os.path.join(top, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if (
                stat.S_ISREG(info.st_mode)
                and info.st_size <= MAX_BYTES
                and (since is None or info.st_mtime >= since)
            ):
                yield path


def is_holder(path):
    return any(path == h or (h.endswith(os.sep) and path.startswith(h)) for h in HOLDERS)


def private(path):
    """0600 (no group/other bits) and owned by the running user, or under such a 0700 directory."""
    info = os.stat(path)
    if info.st_uid != os.geteuid():
        return False
    if not info.st_mode & 0o077:
        return True
    parent = os.path.dirname(path)
    return parent != path and any(
        not os.stat(d).st_mode & 0o077 and os.stat(d).st_uid == os.geteuid()
        for d in (parent, os.path.dirname(parent))
    )


def is_kubeconfig_copy(path):
    return path.endswith(".kubeconfig") or os.path.basename(path) == "variant"


def scan(roots, needles, since=None):
    """(leaks, holders): leaks are {path: hits} outside HOLDERS, or in a holder that is not
    private(); holders are the private holder files that hold one."""
    leaks, holders = {}, {}
    for root, root_since in roots:
        for path in walk(root, root_since if root_since is not None else since):
            hits = file_hits(path, needles)
            if not hits:
                continue
            if is_holder(path) and private(path):
                holders[path] = hits
            elif not (path.endswith(".kubeconfig") or os.path.basename(path) == "variant") or not private(
                path
            ):
                leaks[path] = hits
            else:  # a test's 0600 copy of a kubeconfig (kubeconfig_variant) must hold the key
                holders[path] = hits
    return leaks, holders


def lab_host_hits(needles):
    """{host:path: hits} in the lab hosts' /var/lib/strata-ops and /tmp (docker exec grep)."""
    found = {}
    patterns = ["-e", CANARY_RE.pattern.decode().replace("(?:", "(")]
    for needle in needles.values():
        patterns += ["-e", re.escape(needle.decode())]
    for host in LAB_HOSTS:
        proc = subprocess.run(
            ["docker", "exec", host, "grep", "-rlIE", *patterns, "/var/lib/strata-ops", "/tmp"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 1 or "No such container" in proc.stderr or "is not running" in proc.stderr:
            continue
        for path in proc.stdout.split():
            found[f"{host}:{path}"] = ["canary or client key"]
    return found


# --------------------------------------------------------------------------- the scanner, tested


def test_a_planted_canary_is_found_and_a_private_holder_is_not_a_leak(tmp_path):
    leak = tmp_path / "logs" / "run.log"
    leak.parent.mkdir()
    leak.write_text(f"TASK [x] ok: token={canaries.GITLAB_TOKEN}\n")
    leak.chmod(0o600)
    old_canary = tmp_path / "report.html"  # another run's canary: found by its pattern
    old_canary.write_text(f"<td>{OLD_CANARY}</td>")
    key = tmp_path / "key.json"
    key.write_text('{"k": "SECRETKEYLINE"}')
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing to see: glpat-CANARY-short")
    needles = {"client key (PEM)": b"SECRETKEYLINE"}
    leaks, holders = scan([(str(tmp_path), None)], needles)
    assert leaks == {
        str(leak): [canaries.GITLAB_TOKEN],
        str(old_canary): [OLD_CANARY],
        str(key): ["client key (PEM)"],
    }
    assert holders == {}
    variant = tmp_path / "variant"
    variant.write_text("client-key-data: SECRETKEYLINE")
    variant.chmod(0o600)
    leaks, holders = scan([(str(tmp_path), None)], needles)
    assert str(variant) in holders and str(variant) not in leaks
    shared = tmp_path / "shared" / "kube"
    shared.mkdir(parents=True)
    for directory in (shared, shared.parent):
        directory.chmod(0o755)
    exposed = shared / "variant"
    exposed.write_text("client-key-data: SECRETKEYLINE")
    exposed.chmod(0o644)  # a kubeconfig copy others can read is a leak
    leaks, _holders = scan([(str(tmp_path), None)], needles)
    assert str(exposed) in leaks


def test_canaries_are_one_per_secret_and_shaped_like_it():
    assert canaries.GITLAB_TOKEN.startswith("glpat-CANARY-")
    assert canaries.HF_TOKEN.startswith("hf_CANARY-")
    assert len(set(canaries.ALL.values())) == len(canaries.ALL)
    assert all(CANARY_RE.fullmatch(v.encode()) for v in canaries.ALL.values())


def test_the_kubeconfig_key_needles_match_the_key(tmp_path):
    pem = (
        "-----BEGIN EC PRIVATE KEY-----\n"
        + "\n".join(["A" * 64, "B" * 64, "C" * 20])
        + "\n-----END EC PRIVATE KEY-----\n"
    )
    data = base64.b64encode(pem.encode()).decode()
    path = tmp_path / "k.kubeconfig"
    path.write_text(yaml.safe_dump({"users": [{"name": "u", "user": {"client-key-data": data}}]}))
    needles = key_needles(str(path))
    assert needles["kubeconfig client key (base64)"] == data.encode()
    assert needles["kubeconfig client key (PEM)"] == b"B" * 64


# --------------------------------------------------------------------------- the run's leftovers


# Last, alone: `make integration` runs it after everything else has written what it writes.
@pytest.mark.exclusive
def test_no_secret_in_what_the_runs_wrote(tmp_path_factory):
    """Run after the suite. Zero hits outside the holders; the holders are private."""
    since = time.time() - SINCE_HOURS * 3600
    needles = key_needles()
    # every pytest basetemp of this user (xdist's workers' included), whole
    basetemps = os.path.dirname(str(tmp_path_factory.getbasetemp()))
    roots = [
        (basetemps, since),
        ("/tmp", since),
        ("/var/tmp", since),
        ("/var/lib/strata-ops", None),
        (os.path.expanduser("~/.ansible"), None),
        (CACHE, None),
    ]
    roots = [(r, s) for r, s in roots if os.path.isdir(r)]
    leaks, holders = scan(roots, needles, since)
    leaks.update(lab_host_hits(needles))
    assert not leaks, "secrets outside the files that must hold them:\n" + "\n".join(
        f"  {path}: {', '.join(hits)}" for path, hits in sorted(leaks.items())
    )
    assert all(private(p) for p in holders)


# --------------------------------------------------------------------------- static checks

SECRET_WORDS = {"token", "password", "passwd", "secret"}
NOT_A_VALUE = {
    "path",
    "file",
    "dir",
    "id",
    "name",
    "public",
    "changed",
}  # where/what, not the secret
# Named like a key but holding a path (roles/data_transfer/defaults/main.yml).
# (and the registered result of a no_log task whose .changed alone is read: data_miner/tasks/deploy.yml)
PATH_VARIABLES = {"data_transfer_ssh_key", "data_miner_applied_secret"}


def looks_secret(name):
    """A variable named like a secret: a _-separated word token/password/secret, or a private key;
    not its path, file, id or name."""
    parts = name.lower().split("_")
    if parts[-1] in NOT_A_VALUE or name in PATH_VARIABLES:
        return False
    return bool(SECRET_WORDS & set(parts)) or "private_key" in name.lower()


VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.S)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TASK_KEYS = {"block", "rescue", "always"}
NOT_MODULES = {
    "name", "when", "loop", "loop_control", "register", "tags", "vars", "become", "become_user",
    "delegate_to", "run_once", "changed_when", "failed_when", "no_log", "ignore_errors", "notify",
    "environment", "check_mode", "until", "retries", "delay", "args", "listen", "throttle",
    "ignore_unreachable", "diff", "any_errors_fatal", "connection", "module_defaults",
}  # fmt: skip
# Tasks that only pass a secret's NAME or test its presence (no value reaches the module's args
# or its result) are read by hand and listed here with why.
PASSES_NO_VALUE = {
    "ansible.builtin.assert",  # asserts report the condition's text, not variable values
    "ansible.builtin.include_tasks",
    "ansible.builtin.import_tasks",
    "ansible.builtin.include_role",
    "ansible.builtin.import_role",
}


def secret_variables(value):
    """Names in the Jinja expressions of ``value`` (nested) that look like secrets."""
    found = set()
    if isinstance(value, dict):
        for item in value.values():
            found |= secret_variables(item)
    elif isinstance(value, list):
        for item in value:
            found |= secret_variables(item)
    elif isinstance(value, str):
        for expr in VARIABLE.findall(value):
            names = NAME.findall(re.sub(r"(['\"]).*?\1", "", expr))  # quoted strings are not variables
            found |= {n for n in names if looks_secret(n)}
    return found


def tasks_of(items):
    for task in items or []:
        if not isinstance(task, dict):
            continue
        for key in TASK_KEYS:
            yield from tasks_of(task.get(key))
        if "tasks" in task or "pre_tasks" in task or "post_tasks" in task or "handlers" in task:  # a play
            for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield from tasks_of(task.get(key))
            continue
        if not TASK_KEYS & set(task):
            yield task


def task_files():
    patterns = ("roles/*/tasks/**/*.yml", "roles/*/handlers/*.yml", "playbooks/**/*.yml")
    for pattern in patterns:
        yield from sorted(glob.glob(os.path.join(REPO, pattern), recursive=True))


def test_every_task_that_passes_a_secret_has_no_log():
    missing = []
    for path in task_files():
        with open(path) as handle:
            doc = yaml.safe_load(handle)
        for task in tasks_of(doc if isinstance(doc, list) else []):
            module = next((k for k in task if k not in NOT_MODULES), None)
            if module is None or module in PASSES_NO_VALUE:
                continue
            passed = {k: v for k, v in task.items() if k in (module, "args", "environment", "vars")}
            secrets = secret_variables(without_masked_options(module, passed))
            if secrets and task.get("no_log") not in (True, "true", "yes"):
                missing.append(
                    f"{os.path.relpath(path, REPO)}: {task.get('name', module)!r} passes {sorted(secrets)}"
                )
    assert not missing, "tasks that pass a secret without no_log: true:\n" + "\n".join(missing)


def without_masked_options(module, passed):
    """``passed`` less the options our module declares no_log=True (Ansible masks their values in
    results and logs: the task needs no no_log of its own for them)."""
    short = module.rsplit(".", 1)[-1]
    if not module.startswith("strata.ops.") or not isinstance(passed.get(module), dict):
        return passed
    masked = {option for path, option in no_log_options() if os.path.basename(path) == short + ".py"}
    return dict(passed, **{module: {k: v for k, v in passed[module].items() if k not in masked}})


def no_log_options():
    """(module file, option) for each option declared with no_log=True in plugins/modules."""
    found = []
    for path in sorted(glob.glob(os.path.join(REPO, "plugins", "modules", "*.py"))):
        with open(path) as handle:
            source = handle.read()
        for option in re.findall(r"(\w+)=dict\([^()]*no_log=True", source):
            found.append((path, option))
    return found


def test_every_no_log_option_is_documented_as_such():
    assert no_log_options(), "the scan found no no_log option at all: its pattern is out of date"
    undocumented = []
    for path, option in no_log_options():
        with open(path) as handle:
            source = handle.read()
        doc = yaml.safe_load(re.search(r'DOCUMENTATION = r?"""(.*?)"""', source, re.S).group(1))
        text = " ".join(str(line) for line in _as_list((doc["options"].get(option) or {}).get("description")))
        if not re.search(r"no_log|not logged|never logged", text, re.I):
            undocumented.append(f"{os.path.basename(path)}: {option}")
    assert not undocumented, "no_log options whose description does not say so: " + ", ".join(undocumented)


def _as_list(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("value", list(canaries.ALL.values()))
def test_the_canaries_reach_the_tests_that_use_secrets(value):
    """Every integration test that gives a secret takes it from tests/canaries.py."""
    users = {
        "test_runner_isolation.py": "GITLAB_TOKEN",
        "test_data_miner.py": "HF_TOKEN",
        "test_awx_job_templates.py": "AWX_TOKEN",
    }
    name = next(k for k, v in canaries.ALL.items() if v == value).upper()
    [test_file] = [f for f, n in users.items() if n == name]
    with open(os.path.join(REPO, "tests", "integration", test_file)) as handle:
        assert f"from tests.canaries import {name}" in handle.read()
