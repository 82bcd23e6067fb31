"""docs/operator-guide.md as code: every fenced shell example in it is run on the lab or checked.

Each ```sh / ```bash block follows a mark, ``<!-- example: NAME; KIND[; expect: TEXT]... -->``:

run         run on the real lab (tests/testbed/up: lab hosts, control plane, nginx) with bash -e from
            the repository root, in the order of the guide (flows: stop -> start, enter -> exit,
            teardown last); exit status 0 and every ``expect`` text in the output (whitespace
            runs made one space). Lab playbooks run through tests/testbed/with-lab-lock, the lab
            lock every test takes (checked here). Each ``ansible-playbook`` is given
            ``-e @vars`` naming a namespace of this test's own (the workload's objects and PVs
            stay apart from other users of the lab) and ``confirm_wipe=strata-solana`` becomes
            that namespace; nothing else of the command changes.
static: WHY cannot run on the test bed (a real kind/k3s host, GitLab, a GPU): each
            ``ansible-playbook`` in it names an existing playbook, passes ``--syntax-check`` with
            its ``-e`` variables, and every variable name is in a role's meta/argument_specs.yml
            or named by the playbook (wipe, hold, ...).
tested-by: FILE    run by another test, which reads the guide.

A shell block with no mark fails, and so does a playbook the guide does not mention.
"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import uuid

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .conftest import REPO, skip_or_fail
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import run_playbook

sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
from snapshot_server import nginx_binary
from testbed_paths import LAB_KUBECONFIG

GUIDE = os.path.join(REPO, "docs", "operator-guide.md")
LAB_NAMESPACE = "strata-solana"  # inventories/lab/group_vars/all.yml
LOCK = "tests/testbed/with-lab-lock"
BLOCK = re.compile(r"((?:<!--.*?-->\n)*)```(sh|bash|shell|console)\n(.*?)\n```", re.DOTALL)
MARK = re.compile(r"<!-- example: ([\w-]+); (.*?) -->")


def parse_examples(text):
    """[(name, kind, argument, expects, code)] for every shell block, in the guide's order."""
    examples = []
    for match in BLOCK.finditer(text):
        mark = MARK.search(match.group(1))
        line = text[: match.start(2)].count("\n") + 1
        if not mark:
            examples.append((f"line-{line}", None, None, [], match.group(3)))
            continue
        fields = [f.strip() for f in mark.group(2).split("; ")]
        kind, _sep, argument = fields[0].partition(": ")
        expects = [f.split(": ", 1)[1] for f in fields[1:] if f.startswith("expect: ")]
        examples.append((mark.group(1), kind, argument, expects, match.group(3)))
    return examples


with open(GUIDE) as _handle:
    EXAMPLES = parse_examples(_handle.read())
RUN = [e for e in EXAMPLES if e[1] == "run"]
STATIC = [e for e in EXAMPLES if e[1] == "static"]


def commands(code):
    """The block's commands, continuation lines joined, comment lines dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [c.strip() for c in joined.splitlines() if c.strip() and not c.strip().startswith("#")]


def playbook_commands(code):
    """Each ansible-playbook command as its argv (the `[...]` of optional arguments unwrapped)."""
    found = []
    for command in commands(code):
        argv = [a.strip("[]") for a in shlex.split(command, comments=True)]
        if "ansible-playbook" in argv:
            found.append(argv[argv.index("ansible-playbook") + 1 :])
    return found


def playbook_path(argv):
    for arg in argv:
        if arg.endswith(".yml") and "/" in arg and not arg.startswith("@"):
            return os.path.join(REPO, arg)
        if arg.startswith("strata.ops."):
            return os.path.join(REPO, "playbooks", arg.removeprefix("strata.ops.").replace(".", "/") + ".yml")
    raise AssertionError(f"no playbook in {argv}")


def extra_vars(argv):
    """The -e arguments: {name: value} of key=value and JSON ones; @files are left out."""
    names = {}
    for flag, value in zip(argv, argv[1:]):
        if flag not in ("-e", "--extra-vars") or value.startswith("@"):
            continue
        if value.lstrip().startswith("{"):
            names.update(json.loads(value))
        else:
            key, _sep, val = value.partition("=")
            names[key] = val
    return names


def spec_names():
    names = set()
    for path in glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml")):
        with open(path) as handle:
            for entry in (yaml.safe_load(handle).get("argument_specs") or {}).values():
                names.update((entry.get("options") or {}).keys())
    return names


def playbook_text(path, seen=None):
    """The playbook, the playbooks it imports and the task files it includes (playbooks/tasks/)."""
    seen = seen if seen is not None else set()
    if path in seen:
        return ""
    seen.add(path)
    with open(path) as handle:
        text = handle.read()
    for imported in re.findall(r"(?:import_playbook|include_tasks|import_tasks):\s*(\S+)", text):
        text += playbook_text(os.path.normpath(os.path.join(os.path.dirname(path), imported)), seen)
    return text


def ansible_env():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def test_every_shell_block_is_marked():
    unmarked = [e[0] for e in EXAMPLES if e[1] not in ("run", "static", "tested-by")]
    assert not unmarked, f"shell blocks of docs/operator-guide.md neither run nor marked: {unmarked}"
    assert RUN and STATIC
    for name, kind, argument, _expects, _code in EXAMPLES:
        if kind == "static":
            assert argument, f"{name}: a static example says why it cannot run here"
        if kind == "tested-by":
            with open(os.path.join(REPO, argument)) as handle:
                assert "operator-guide.md" in handle.read(), f"{name}: {argument} does not read the guide"


def is_playbook(path):
    """A list of plays (task files included by playbooks live there too)."""
    with open(path) as handle:
        doc = yaml.safe_load(handle)
    import_keys = ("hosts", "import_playbook", "ansible.builtin.import_playbook")
    return isinstance(doc, list) and all(any(k in play for k in import_keys) for play in doc)


def test_every_playbook_is_in_the_guide():
    with open(GUIDE) as handle:
        text = handle.read()
    playbooks = sorted(
        os.path.relpath(p, os.path.join(REPO, "playbooks"))
        for p in glob.glob(os.path.join(REPO, "playbooks", "**", "*.yml"), recursive=True)
        if is_playbook(p)
    )
    assert playbooks
    missing = [p for p in playbooks if f"`{p}`" not in text and f"playbooks/{p}" not in text]
    assert not missing, f"docs/operator-guide.md does not cover {missing}"


def test_lab_examples_take_the_lab_lock():
    for name, _kind, _arg, _expects, code in RUN:
        for command in commands(code):
            if "ansible-playbook" in command:
                assert command.startswith(LOCK + " "), f"{name}: a lab run without the lab lock: {command}"


@pytest.mark.parametrize("example", STATIC, ids=[e[0] for e in STATIC])
def test_static_example(example):
    name, _kind, _why, _expects, code = example
    runs = playbook_commands(code)
    assert runs, f"{name}: a static example with no ansible-playbook command"
    known = spec_names()
    for argv in runs:
        path = playbook_path(argv)
        assert os.path.isfile(path), f"{name}: {path} does not exist"
        variables = extra_vars(argv)
        text = playbook_text(path)
        unknown = [v for v in variables if v not in known and not re.search(rf"\b{v}\b", text)]
        assert not unknown, f"{name}: -e {unknown} are in no role's argument_specs.yml nor in {path}"
        inventory = os.path.join(REPO, "inventories", "lab")
        if "-i" in argv and os.path.exists(os.path.join(REPO, argv[argv.index("-i") + 1])):
            inventory = os.path.join(REPO, argv[argv.index("-i") + 1])
        check = ["ansible-playbook", "--syntax-check", "-i", inventory, path, "-e", json.dumps(variables)]
        proc = subprocess.run(check, cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{name}: {' '.join(check)}\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def lab(lab_cluster, tmp_path_factory):
    """The lab converged; a namespace of this test's own for the workload; afterwards the
    namespace, its PVs, an experiment left entered and the snapshot source are gone."""
    if nginx_binary() is None:
        skip_or_fail("nginx is not installed (tests/testbed/up installs nginx-light)")
    client = k8s.get_client(lab_cluster["kubeconfig"])
    ns = f"it-guide-{uuid.uuid4().hex[:6]}"
    vars_file = tmp_path_factory.mktemp("guide") / "namespace.json"
    vars_file.write_text(json.dumps({"strata_namespace": ns, "workload_deploy_termination_grace_period": 1}))
    yield {"ns": ns, "vars": str(vars_file)}
    run_playbook("experiment_exit.yml", "-e", f"strata_kubeconfig={LAB_KUBECONFIG}")
    subprocess.run([os.path.join(REPO, "tests", "testbed", "snapshot-source"), "down"], check=False)
    subprocess.run(["docker", "exec", "strata-lab-2", "rm", "-rf", "/tmp/strata-guide-transfer"], check=False)
    client.delete("Namespace", ns)
    for pv in client.list("PersistentVolume")[0]:
        if pv["metadata"]["name"].startswith(ns + "-"):
            client.delete("PersistentVolume", pv["metadata"]["name"])


@pytest.mark.needs("docker")
@pytest.mark.needs("k8s")
@pytest.mark.needs("zfs")
@pytest.mark.parametrize("example", RUN, ids=[e[0] for e in RUN])
def test_run_example(lab, example):
    name, _kind, _arg, expects, code = example
    script = code.replace("ansible-playbook ", f"ansible-playbook -e @{shlex.quote(lab['vars'])} ")
    script = script.replace(f"confirm_wipe={LAB_NAMESPACE}", f"confirm_wipe={lab['ns']}")
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} failed (rc {proc.returncode}):\n{script}\n{out[-6000:]}"
    flat = " ".join(out.split())
    for text in expects:
        assert text in flat, f"{name}: {text!r} is not in its output:\n{out[-4000:]}"
