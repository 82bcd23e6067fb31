"""The one error type and the one way a module ends (module_utils/common.py)."""

import sys

import pytest

from ansible_collections.strata.ops.plugins.module_utils import common
from ansible_collections.strata.ops.plugins.module_utils.k8s import K8sContextError


class Module:
    """What run_module uses of an AnsibleModule; exit_json/fail_json end the run like Ansible's."""

    def __init__(self):
        self.warned, self.result = [], None

    def warn(self, text):
        self.warned.append(text)

    def exit_json(self, **result):
        self.result = result
        raise SystemExit(0)

    def fail_json(self, msg, **result):
        self.result = dict(result, msg=msg, failed=True)
        raise SystemExit(1)


def test_a_detail_named_kind_is_the_object_kind_not_the_error_kind():
    error = common.StrataError("no such Node", error_kind="not_found", kind="Node", name="n1")
    assert (error.error_kind, error.details["kind"]) == ("not_found", "Node")


def test_an_error_becomes_fail_json_with_its_kind_and_details():
    module = Module()

    def work():
        raise K8sContextError("no context 'x'", contexts=["a"], warnings=["kubeconfig is world-readable"])

    with pytest.raises(SystemExit):
        common.run_module(module, work)
    assert module.result == {"msg": "no context 'x'", "error": "context", "contexts": ["a"], "failed": True}
    assert module.warned == ["kubeconfig is world-readable"]


def test_a_result_ends_in_exit_json_and_its_warnings_are_warned():
    module = Module()
    with pytest.raises(SystemExit):
        common.run_module(module, lambda: {"changed": True, "warnings": ["w1", "w2"]})
    assert module.result == {"changed": True}
    assert module.warned == ["w1", "w2"]


def test_the_kind_is_the_class_name_unless_set():
    class RunnerBroke(common.StrataError):
        pass

    assert RunnerBroke("x").error_kind == "RunnerBroke"
    assert RunnerBroke("x", error_kind="refused").error_kind == "refused"
    assert common.InvalidArgument("bad", option="keep").details == {"option": "keep"}
    assert str(common.StrataError("what is wrong and how to fix it")) == "what is wrong and how to fix it"


def test_other_exceptions_are_bugs_and_not_hidden():
    with pytest.raises(ZeroDivisionError):
        common.run_module(Module(), lambda: 1 / 0)


def test_utc_iso_has_milliseconds_and_z():
    assert common.utc_iso(0.25) == "1970-01-01T00:00:00.250Z"


def test_the_result_encoder_is_loaded_before_the_work(monkeypatch):
    """ansible-core 2.19+ imports the module-to-controller JSON profile in exit_json; run_module
    imports it before work() so that a wait's end is not followed by an import."""
    json_utils = pytest.importorskip("ansible.module_utils.common.json")
    if not hasattr(json_utils, "get_module_encoder"):
        pytest.skip("this ansible-core loads its encoder with AnsibleModule")
    from ansible.module_utils import basic  # noqa: PLC0415

    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    profile = "ansible.module_utils._internal._json._profiles._module_legacy_m2c"
    monkeypatch.delitem(sys.modules, profile, raising=False)
    loaded_before_work = []

    def work():
        loaded_before_work.append(profile in sys.modules)
        return {"changed": False}

    with pytest.raises(SystemExit):
        common.run_module(Module(), work)
    assert loaded_before_work == [True]


def test_no_profile_no_encoder_load(monkeypatch):
    from ansible.module_utils import basic  # noqa: PLC0415

    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", None, raising=False)
    common.load_result_encoder()  # nothing to load and no error: imported outside a module process
