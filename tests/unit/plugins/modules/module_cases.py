"""Module tests as data, in the shape of community.general's tests/unit/plugins/modules/*.yaml:
each case gives the module's input, its flags (check mode), the exact commands it must run with
what each answers, and the result it must return. ``run_case`` runs the module's main() in this
process with AnsibleModule.run_command, exit_json and fail_json replaced.

    - id: criu too old
      input: {pid: "{pid}", images_dir: "{tmp}/images", criu_path: "{tmp}/criu"}
      flags: {check: false}
      files: {"{tmp}/criu": "#!/bin/sh\\n"}      # created (mode 0755) before the run
      containerd_dumps: {"{tmp}/d": {name: app}}  # fakes.containerd's write_containerd_dump, manifest keys
      mocks:
        run_command:
          - command: ["{tmp}/criu", "--version"]
            rc: 0
            out: "Version: 3.17\\n"
      output: {failed: true, error: CriuTooOld}  # exact values
      output_contains: {msg: ["needs CRIU >= 4.0"]}   # substrings; for lists: a prefix
      output_items_contain: {conflicts: [[plain directory, ZFS]]}  # item i contains the string(s) i
      output_at: [[[paths, "{tmp}", kind], directory]]  # a value deep in the result
      bin_paths: {zfs: /sbin/zfs}                # what AnsibleModule.get_bin_path finds
Placeholders: {tmp} (the test's tmp_path), {pid} (this process; an int where it is a whole input value).
"""

import json
import os

import pytest
import yaml
from ansible.module_utils import basic

from tests.unit.compat import patch_module_args

from ...fakes.containerd import write_containerd_dump


class ModuleExit(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


def substitute(value, tmp, pid, ints=False):
    """Fill the placeholders; with ``ints`` a value that is exactly "{pid}" becomes the int."""
    if isinstance(value, str):
        if ints and value == "{pid}":
            return pid
        return value.replace("{tmp}", tmp).replace("{pid}", str(pid))
    if isinstance(value, list):
        return [substitute(v, tmp, pid, ints) for v in value]
    if isinstance(value, dict):
        return dict((substitute(k, tmp, pid), substitute(v, tmp, pid, ints)) for k, v in value.items())
    return value


def load_cases(path):
    with open(path) as handle:
        cases = yaml.safe_load(handle)
    return [pytest.param(case, id=case["id"]) for case in cases]


class CommandScript:
    """run_command that answers the case's commands in order and fails on any other."""

    def __init__(self, expected):
        self.expected = list(expected)
        self.ran = []

    def __call__(self, args, **kwargs):
        argv = [str(a) for a in args]
        self.ran.append(argv)
        assert self.expected, f"unexpected command {argv}; the case lists no more"
        step = self.expected.pop(0)
        assert argv == step["command"], f"ran {argv}, the case expects {step['command']}"
        if "environ_update" in step:
            assert kwargs.get("environ_update") == step["environ_update"]
        return step.get("rc", 0), step.get("out", ""), step.get("err", "")


def run_case(main, case, tmp_path, monkeypatch):
    tmp, pid = str(tmp_path), os.getpid()
    case = dict(substitute(case, tmp, pid), input=substitute(case["input"], tmp, pid, ints=True))
    for path, content in (case.get("files") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(content)
        os.chmod(path, 0o755 if content.startswith("#!") else 0o644)
    for path, manifest in (case.get("containerd_dumps") or {}).items():
        write_containerd_dump(path, **(manifest or {}))
    script = CommandScript((case.get("mocks") or {}).get("run_command") or [])
    monkeypatch.setattr(
        basic.AnsibleModule, "run_command", lambda _module, args, **kwargs: script(args, **kwargs)
    )

    def exit_json(_module, **kwargs):
        raise ModuleExit(kwargs)

    def fail_json(_module, msg, **kwargs):
        kwargs.pop("exception", None)
        raise ModuleExit(dict(kwargs, failed=True, msg=msg))

    bin_paths = case.get("bin_paths") or {}
    monkeypatch.setattr(
        basic.AnsibleModule, "get_bin_path", lambda _module, name, *_a, **_k: bin_paths.get(name)
    )
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    args = dict(case["input"], _ansible_check_mode=(case.get("flags") or {}).get("check", False))
    with patch_module_args(args), pytest.raises(ModuleExit) as done:
        main()
    result = json.loads(json.dumps(done.value.result, default=str))
    assert script.expected == [], f"commands the module did not run: {script.expected}"
    for key, value in (case.get("output") or {}).items():
        assert result.get(key) == value, f"{key}: {result.get(key)!r} != {value!r}\n{result}"
    for key, parts in (case.get("output_contains") or {}).items():
        got = result.get(key)
        if isinstance(got, list):
            assert got[: len(parts)] == parts, f"{key} starts {got[: len(parts)]!r}, not {parts!r}"
        else:
            for part in parts:
                assert part in (got or ""), f"{key}: {part!r} not in {got!r}"
    for key, parts in (case.get("output_items_contain") or {}).items():
        got = result.get(key) or []
        assert len(got) == len(parts), f"{key}: {got!r} has not {len(parts)} items"
        for item, wanted in zip(got, parts):
            for part in wanted if isinstance(wanted, list) else [wanted]:
                assert part in item, f"{key}: {part!r} not in {item!r}"
    for keys, value in case.get("output_at") or []:
        got = result
        for key in keys:
            got = got[key]
        assert got == value, f"{keys}: {got!r} != {value!r}"
    return result
