"""process_end.py: a module process ends once its exit handlers have run, with the module's exit
status, without the interpreter's teardown - and ends as usual where a handler it does not know
was registered. Each case is a real module process (AnsibleModule, arguments on stdin)."""

import atexit
import json
import os
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.strata.ops.plugins.module_utils import common

MODULE = textwrap.dedent(
    """
    import atexit
    import logging
    import os
    import sys

    from ansible.module_utils.basic import AnsibleModule
    from ansible_collections.strata.ops.plugins.module_utils.common import StrataError, run_module
    from ansible_collections.strata.ops.plugins.module_utils.process_end import at_exit

    OUT = os.environ["PROCESS_END_TEST_OUT"]


    def witness(event, _args, fd=os.open(OUT + "/teardown", os.O_WRONLY | os.O_CREAT), write=os.write):
        # The interpreter's finalization, after the exit handlers, says this; os._exit does not.
        if event == "cpython.PyInterpreterState_Clear":
            write(fd, b"torn down")


    sys.addaudithook(witness)


    def mark(name):
        with open(OUT + "/" + name, "w") as handle:
            handle.write(name)


    def work(module):
        if module.params["foreign_handler"]:
            atexit.register(mark, "foreign")
        log = logging.getLogger("process-end-test")
        log.addHandler(logging.FileHandler(OUT + "/log"))
        log.warning("logged")
        with open(OUT + "/tmpdir", "w") as handle:
            handle.write(module.tmpdir)
        at_exit(lambda: mark("cleanup"))
        if module.params["outcome"] == "fail":
            raise StrataError("the test asked for a failure", error_kind="asked")
        if module.params["outcome"] == "unserializable":
            return {"changed": True, "value": object()}
        return {"changed": True, "warnings": ["a warning"]}


    def main():
        module = AnsibleModule(
            argument_spec={
                "outcome": {"type": "str", "choices": ["ok", "fail", "unserializable"]},
                "foreign_handler": {"type": "bool", "default": False},
            }
        )
        run_module(module, lambda: work(module))


    if __name__ == "__main__":
        main()
    """
)


def run_module_process(tmp_path, **args):
    script = tmp_path / "module.py"
    script.write_text(MODULE)
    out = tmp_path / "out"
    out.mkdir()
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [sys.executable, str(script), str(args_file)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PROCESS_END_TEST_OUT=str(out)),
        check=False,
        timeout=60,
    )
    return proc, {path.name: path.read_text() for path in out.iterdir()}


def result_of(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("outcome", "rc"), [("ok", 0), ("fail", 1)])
def test_ends_after_its_exit_handlers_with_the_modules_status(tmp_path, outcome, rc):
    proc, files = run_module_process(tmp_path, outcome=outcome)
    assert proc.returncode == rc, proc.stderr
    result = result_of(proc)
    if outcome == "ok":
        assert result["changed"] is True
        warning = result["warnings"][0]  # ansible-core 2.19 sends a structured warning, 2.16 a text
        assert (warning if isinstance(warning, str) else warning["event"]["msg"]) == "a warning"
    else:
        assert (result["failed"], result["error"]) == (True, "asked")
    assert files["cleanup"] == "cleanup"  # at_exit's cleanup ran
    assert files["log"] == "logged\n"  # logging's shutdown flushed and closed its file
    assert not os.path.exists(files["tmpdir"])  # AnsibleModule's temporary directory removed
    assert files["teardown"] == ""  # and no finalization of the interpreter after them
    assert proc.stderr == ""


def test_a_foreign_exit_handler_leaves_the_usual_end(tmp_path):
    proc, files = run_module_process(tmp_path, outcome="ok", foreign_handler=True)
    assert proc.returncode == 0, proc.stderr
    assert result_of(proc)["changed"] is True
    assert files["foreign"] == "foreign"
    assert files["cleanup"] == "cleanup"
    assert not os.path.exists(files["tmpdir"])
    assert files["teardown"] == "torn down"


def test_a_result_that_cannot_be_written_is_a_crash_not_a_success(tmp_path):
    proc, files = run_module_process(tmp_path, outcome="unserializable")
    assert proc.returncode != 0
    assert files["cleanup"] == "cleanup"


def test_imported_it_only_raises_system_exit():
    """In a test process (the module imported, not run) nothing is registered: the process that
    called run_module keeps its own end and exit status."""

    class Module:
        def warn(self, text):
            raise AssertionError(text)

        def exit_json(self, **result):
            raise SystemExit(0)

    before = atexit._ncallbacks()
    with pytest.raises(SystemExit):
        common.run_module(Module(), lambda: {"changed": False})
    assert atexit._ncallbacks() == before
