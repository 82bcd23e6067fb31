"""The release steps run away from the checkout, and the installed collection run from a clean path.

Used by tests/integration/test_release.py and tests/release/core_range; nothing here writes to the
checkout.

    copy_tree(dest)          the files git lists (tracked + untracked, not ignored; .collections
                             left out) copied to dest/ansible_collections/strata/ops; its path
    tree_hash()              sha256 of those files' paths and contents (keys cached results)
    next_version(tree)       galaxy.yml's version if it is not released yet, else the next minor
    build(tree, version, out, bin_dir)   tests/release/build in that tree; (tarball, seconds)
    install(tarball, dest, bin_dir)      ansible-galaxy collection install --no-deps into a clean
                             collections path dest; the installed collection's directory
    Runner(bin_dir, clean, workdir)      runs ansible commands with only the clean path and the
                             venv's site-packages as collection paths, from a directory holding no
                             ansible.cfg, and says where strata.ops resolved from
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("STRATA_CACHE", os.path.expanduser("~/.cache/strata-ops"))
VENV_BIN = os.path.dirname(sys.executable)
# What the lab flow runs on: inventories/lab of the installed copy, the test bed's kubeconfig.
LAB_KUBECONFIG = os.path.join(CACHE, "controlplane", "strata-lab.kubeconfig")


def tree_files():
    """Paths (relative, sorted) of the checkout's files as git lists them, without .collections
    (the link back to the checkout) and files deleted but still tracked."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True
    ).stdout.decode()
    paths = sorted(set(filter(None, out.split("\0"))))
    return [p for p in paths if not p.startswith(".collections/") and os.path.lexists(os.path.join(REPO, p))]


def tree_hash():
    digest = hashlib.sha256()
    for path in tree_files():
        full = os.path.join(REPO, path)
        digest.update(path.encode() + b"\0")
        if os.path.islink(full):
            digest.update(b"link:" + os.readlink(full).encode())
        elif os.path.isfile(full):
            with open(full, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def copy_tree(dest):
    """The checkout's files under dest/ansible_collections/strata/ops (ansible-doc, which
    antsibull-changelog runs, finds the collection by that layout)."""
    root = os.path.join(dest, "ansible_collections", "strata", "ops")
    for path in tree_files():
        src, target = os.path.join(REPO, path), os.path.join(root, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
    return root


def next_version(tree):
    """galaxy.yml's version when changelogs/changelog.yaml has no release of it, else X.(Y+1).0."""
    with open(os.path.join(tree, "galaxy.yml")) as handle:
        version = yaml.safe_load(handle)["version"]
    with open(os.path.join(tree, "changelogs", "changelog.yaml")) as handle:
        released = (yaml.safe_load(handle) or {}).get("releases") or {}
    if version not in released:
        return version
    major, minor = (int(n) for n in re.match(r"(\d+)\.(\d+)\.", version).groups())
    return f"{major}.{minor + 1}.0"


def tool_env(bin_dir, **extra):
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), ANSIBLE_NOCOLOR="1")
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "VIRTUAL_ENV"):
        env.pop(name, None)
    env.update(extra)
    return env


def run(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        out, err = proc.stdout[-4000:], proc.stderr[-4000:]
        raise AssertionError(f"{' '.join(argv)} failed (rc {proc.returncode}):\n{out}\n{err}")
    return proc


def empty_config(directory):
    """An empty ansible.cfg in directory (ANSIBLE_CONFIG=/dev/null is refused: no extension)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "empty-ansible.cfg")
    with open(path, "w") as handle:
        handle.write("# no settings: ansible-core's defaults\n")
    return path


def build(tree, version, out, bin_dir=VENV_BIN):
    """tests/release/build --version VERSION --out OUT in the copied tree; (tarball, seconds)."""
    start = time.monotonic()
    proc = run(
        [os.path.join(tree, "tests", "release", "build"), "--version", version, "--out", out],
        cwd=tree,
        env=tool_env(bin_dir, ANSIBLE_CONFIG=empty_config(out)),
    )
    return proc.stdout.strip().splitlines()[-1], time.monotonic() - start


def install(tarball, dest, bin_dir=VENV_BIN):
    """The tarball installed into the clean collections path dest (no dependencies resolved: Galaxy
    is unreachable; they come from the venv's `ansible` package). The installed collection's dir."""
    galaxy = os.path.join(bin_dir, "ansible-galaxy")
    run(
        [galaxy, "collection", "install", "--no-deps", "--force", "-p", dest, tarball],
        cwd=os.path.dirname(dest),
        env=tool_env(bin_dir, ANSIBLE_CONFIG=empty_config(os.path.dirname(dest))),
    )
    return os.path.join(dest, "ansible_collections", "strata", "ops")


def site_packages(bin_dir):
    """The directory of the venv's Python that holds ansible_collections (the `ansible` package)."""
    code = "import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))"
    return run([os.path.join(bin_dir, "python"), "-c", code]).stdout.strip()


CONFIG = """\
# Written by tests/release/releaselib.py: the installed collection, nothing of the checkout.
[defaults]
interpreter_python = auto_silent
host_key_checking = False
retry_files_enabled = False
callback_result_format = yaml

[connection]
pipelining = True

[inventory]
enable_plugins = host_list, script, auto, strata.ops.cluster_config, yaml, ini, toml
"""


class Runner:
    """Ansible commands of the venv bin_dir, with strata.ops only in the clean collections path."""

    def __init__(self, bin_dir, clean, workdir):
        self.bin_dir, self.clean, self.workdir = bin_dir, clean, workdir
        os.makedirs(workdir, exist_ok=True)
        config = os.path.join(workdir, "ansible.cfg")
        with open(config, "w") as handle:
            handle.write(CONFIG)
        self.env = tool_env(
            bin_dir,
            ANSIBLE_CONFIG=config,
            # Only these two: sys.path scanning off, so nothing else can supply a collection.
            ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([clean, site_packages(bin_dir)]),
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
            ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "tmp"),
            HOME=os.environ.get("HOME", workdir),
        )

    def __call__(self, tool, *args, check=True, timeout=900):
        argv = [os.path.join(self.bin_dir, tool), *args]
        proc = subprocess.run(
            argv, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            out, err = proc.stdout[-6000:], proc.stderr[-3000:]
            raise AssertionError(f"{' '.join(argv)} failed (rc {proc.returncode}):\n{out}\n{err}")
        return proc

    def core_version(self):
        code = "import ansible.release as r; print(r.__version__)"
        return run([os.path.join(self.bin_dir, "python"), "-c", code]).stdout.strip()

    def collection_paths(self):
        """{collections path: version} of every strata.ops ansible-galaxy finds."""
        proc = self("ansible-galaxy", "collection", "list", "strata.ops", "--format", "json")
        return {path: found["strata.ops"]["version"] for path, found in json.loads(proc.stdout).items()}

    def module_file(self, name):
        """The file ansible-doc documents strata.ops.<name> from."""
        proc = self("ansible-doc", "--json", "-t", "module", "strata.ops." + name)
        return json.loads(proc.stdout)["strata.ops." + name]["doc"]["filename"]


def assert_resolves_to(runner, installed, version):
    """strata.ops comes from the clean path, once, at the version built."""
    clean_collections = os.path.join(runner.clean, "ansible_collections")
    found = runner.collection_paths()
    assert found == {clean_collections: version}, found
    module = runner.module_file("storage_info")
    assert module == os.path.join(installed, "plugins", "modules", "storage_info.py"), module
    assert not module.startswith(REPO + os.sep), module


def localhost_flow(runner, installed):
    """strata.ops.storage_info on localhost through ansible-playbook, from the installed copy:
    the task's module file is the installed one (-vvv names it)."""
    playbook = os.path.join(runner.workdir, "localhost.yml")
    with open(playbook, "w") as handle:
        handle.write(
            "- name: Installed strata.ops on localhost\n"
            "  hosts: localhost\n"
            "  connection: local\n"
            "  gather_facts: false\n"
            "  vars:\n"
            "    ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
            "  tasks:\n"
            "    - name: Read what backs a path\n"
            "      strata.ops.storage_info:\n"
            "        paths: [/tmp]\n"
            "      register: strata_release_info\n"
            "    - name: The module answered for /tmp\n"
            "      ansible.builtin.assert:\n"
            "        that: strata_release_info.paths['/tmp'] is defined\n"
        )
    proc = runner("ansible-playbook", "-i", "localhost,", "-vvv", playbook)
    tail = proc.stdout[-3000:]
    assert os.path.join(installed, "plugins", "modules", "storage_info.py") in proc.stdout, tail
    assert REPO + "/plugins/" not in proc.stdout, tail
    return proc


def lab_flow(runner, installed, report_dir):
    """`ansible-playbook strata.ops.health_check --check` (the playbook by its FQCN) on the installed
    copy's inventories/lab, with a report dir so a lab that another test left unhealthy gives red
    rows, not a failed run. Its tasks come from the installed roles."""
    inventory = os.path.join(installed, "inventories", "lab")
    proc = runner(
        "ansible-playbook",
        "-i",
        inventory,
        "strata.ops.health_check",
        "--check",
        "-vvv",
        "-e",
        f"health_check_report_dir={report_dir}",
        timeout=900,
    )
    roles, tail = os.path.join(installed, "roles", "health_check", "tasks"), proc.stdout[-3000:]
    assert f"task path: {roles}" in proc.stdout, tail
    assert f"task path: {REPO}/" not in proc.stdout, tail
    # check mode: the report is not written, but its verdict is computed and shown
    assert "TASK [strata.ops.health_check : Verdict and where the page is]" in proc.stdout, tail
    assert not re.search(r"failed=[1-9]|unreachable=[1-9]", proc.stdout.split("PLAY RECAP")[-1]), tail
    return proc
