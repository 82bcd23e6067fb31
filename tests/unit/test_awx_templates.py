"""The AWX configuration as code (awx/): no controller, no stand-in of one.

* configure.yml's awx.awx tasks are rendered with Ansible's own templar for every loop item (the data
  files read by its lookups, module_defaults merged) and the exact parameters are validated with
  ArgumentSpecValidator against each awx.awx module's OWN argument spec, captured from the installed
  collection by running the module's main() with AnsibleModule.__init__ patched to record and stop.
* Surveys follow AWX's survey format and its rules for defaults (awx/main/models/mixins.py
  _survey_element_validation); every survey variable is a variable of the roles (and entry points)
  the template's playbook runs, of a compatible type.
* Every playbook under playbooks/ has a template; credential type injectors use only declared
  inputs; no secret has a default; the site workflow runs layers 1-5, each on the previous one's
  success only.

Each check is a function returning the problems it finds, and a negative test feeds it a broken
entry.
"""

import copy
import glob
import json
import os
import re

import jinja2
import jinja2.meta
import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.release import __version__ as ansible_core_version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AWX = os.path.join(REPO, "awx")
PLAYBOOKS = os.path.join(REPO, "playbooks")
ROLES = os.path.join(REPO, "roles")
COLLECTIONS = os.path.join(REPO, ".collections")

SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
CHOICE_TYPES = {"multiplechoice", "multiselect"}
# Survey type -> the role argument types it may feed. raw takes any value.
COMPATIBLE = {
    "text": {"str", "path", "raw"},
    "textarea": {"str", "path", "raw"},
    "password": {"str", "raw"},
    "integer": {"int", "raw"},
    "float": {"float", "raw"},
    "multiplechoice": {"str", "raw"},
    "multiselect": {"list"},
}
SECRET_NAME = re.compile(r"token|password|passwd|secret|kubeconfig|private_key", re.IGNORECASE)
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# The data files configure.yml reads with include_vars (as strata_awx_<name>)
DATA_FILES = ("credential_types", "job_templates", "workflows")


class _AwxData(yaml.SafeLoader):
    """YAML as include_vars reads awx/*.yml: !unsafe (the injectors' AWX templates) is a plain string."""


_AwxData.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load(name):
    with open(os.path.join(AWX, name)) as handle:
        return yaml.load(handle, Loader=_AwxData)  # a SafeLoader with one more tag


def plain(value):
    """Ansible's tagged values as plain JSON types (what reaches the module)."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------------
# configure.yml, rendered as ansible-playbook renders it


_LOADER_READY = []


def _templar_env():
    if not _LOADER_READY:
        from ansible.plugins.loader import init_plugin_loader  # noqa: PLC0415

        init_plugin_loader([COLLECTIONS])
        _LOADER_READY.append(True)
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415

    loader = DataLoader()
    loader.set_basedir(AWX)
    try:  # ansible-core 2.19 marks what may be rendered; older cores render any string
        play = loader.load_from_file(os.path.join(AWX, "configure.yml"), trusted_as_template=True)[0]
    except TypeError:
        play = loader.load_from_file(os.path.join(AWX, "configure.yml"))[0]
    # what the play's include_vars task reads: !unsafe values stay as written on every core
    reads = [task for task in play["tasks"] if "ansible.builtin.include_vars" in task]
    assert [tuple(task["loop"]) for task in reads] == [DATA_FILES], "configure.yml must read awx's data files"
    data = {
        f"strata_awx_{name}": loader.load_from_file(os.path.join(AWX, f"{name}.yml")) for name in DATA_FILES
    }
    return loader, Templar, play, data


SAMPLE_EXTRA_VARS = {
    "controller_host": "https://awx.example.com",
    "controller_oauthtoken": "sample-token",
    "strata_awx_credentials": {
        "machine": "strata hosts",
        "kubeconfig": "strata cluster",
        "gitlab": "strata gitlab",
        "hf_token": "strata hf",
        "kubelet_token": "strata kubelet",
    },
}


ansible_version = tuple(int(part) for part in ansible_core_version.split(".")[:2])
# Before ansible-core 2.19, omit is a variable holding a placeholder that the task executor drops
# from the module's arguments (ansible.executor.task_executor: remove_omit); 2.19 drops it itself.
OMIT_PLACEHOLDER = "__omit_place_holder__strata"


def _without_omitted(value):
    if isinstance(value, dict):
        return {key: _without_omitted(item) for key, item in value.items() if item != OMIT_PLACEHOLDER}
    if isinstance(value, list):
        return [_without_omitted(item) for item in value if item != OMIT_PLACEHOLDER]
    return value


def render_configure(extra_vars=None):
    """[(task name, module, [params for each loop item])] of configure.yml's awx.awx tasks, with
    extra vars as -e gives them (they override the play's vars, so the data can be replaced)."""
    loader, templar_class, play, data = _templar_env()
    variables = dict(play["vars"], playbook_dir=AWX, **data, **SAMPLE_EXTRA_VARS)
    if ansible_version < (2, 19):
        variables["omit"] = OMIT_PLACEHOLDER
    variables.update(extra_vars or {})
    templar = templar_class(loader=loader, variables=variables)
    defaults = _without_omitted(plain(templar.template(play["module_defaults"])))["group/awx.awx.controller"]
    rendered = []
    for task in play["tasks"]:
        module = next((key for key in task if key.startswith("awx.awx.")), None)
        if module is None:
            continue
        # the loop items as Ansible hands them over (unsafe values stay unsafe on cores before 2.19)
        items = templar.template(task["loop"]) if "loop" in task else [None]
        params = []
        for item in items:
            args = _without_omitted(
                plain(
                    templar_class(loader=loader, variables=dict(variables, item=item)).template(task[module])
                )
            )
            params.append(dict(defaults, **args))
        rendered.append((task["name"], module.split(".")[-1], params))
    return rendered


@pytest.fixture(scope="module")
def configure():
    return render_configure()


class _Captured(Exception):
    pass


_SPECS = {}


def module_spec(name, monkeypatch=None):
    """(argument_spec, the other AnsibleModule keyword arguments) of awx.awx.<name>, as its main()
    builds them (the ControllerModule's auth options included)."""
    if name in _SPECS:
        return _SPECS[name]
    import importlib  # noqa: PLC0415

    _templar_env()  # the collection loader, for ansible_collections.awx.awx
    mod = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{name}")
    captured = {}

    def record(self, *args, **kwargs):
        captured.update(kwargs)
        raise _Captured

    original = basic.AnsibleModule.__init__
    basic.AnsibleModule.__init__ = record
    try:
        with pytest.raises(_Captured):
            mod.main()
    finally:
        basic.AnsibleModule.__init__ = original
    spec = captured.pop("argument_spec")
    captured.pop("supports_check_mode", None)
    _SPECS[name] = (spec, captured)
    return _SPECS[name]


def param_errors(module, params):
    """The errors AnsibleModule would report for these parameters (unknown keys, types, choices,
    required, mutually exclusive, required_if)."""
    spec, kwargs = module_spec(module)
    validator = ArgumentSpecValidator(
        spec,
        mutually_exclusive=kwargs.get("mutually_exclusive"),
        required_together=kwargs.get("required_together"),
        required_one_of=kwargs.get("required_one_of"),
        required_if=kwargs.get("required_if"),
        required_by=kwargs.get("required_by"),
    )
    return validator.validate(copy.deepcopy(params)).error_messages


# ---------------------------------------------------------------------------------------------
# Surveys in AWX's format


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(question):
    choices = question.get("choices")
    if isinstance(choices, str):
        return [c for c in choices.splitlines() if c.strip()]
    return choices


def _default_errors(question):  # noqa: PLR0912
    """AWX's checks of a value (here the default) for its question type."""
    var, kind, value = question["variable"], question["type"], question["default"]
    low, high = question.get("min"), question.get("max")
    low = None if low in ("", None) else low
    high = None if high in ("", None) else high
    errors = []
    if kind in ("text", "textarea", "password"):
        if not isinstance(value, str):
            return [f"{var}: default {value!r} is not a string"]
        if low is not None and len(value) < int(low):
            errors.append(f"{var}: default shorter than min {low}")
        if high is not None and len(value) > int(high):
            errors.append(f"{var}: default longer than max {high}")
    elif kind == "integer":
        if not _is_int(value):
            return [f"{var}: default {value!r} is not an integer"]
    elif kind == "float":
        if not (_is_int(value) or isinstance(value, float)):
            return [f"{var}: default {value!r} is not a number"]
    elif kind == "multiplechoice":
        if value not in (_choices(question) or []):
            errors.append(f"{var}: default {value!r} is not one of the choices")
    elif kind == "multiselect":
        if not isinstance(value, list):
            return [f"{var}: default {value!r} is not a list"]
        errors += [
            f"{var}: default {v!r} is not one of the choices" for v in value if v not in _choices(question)
        ]
    if kind in ("integer", "float"):
        if low is not None and value < float(low):
            errors.append(f"{var}: default below min {low}")
        if high is not None and value > float(high):
            errors.append(f"{var}: default above max {high}")
    return errors


def survey_errors(survey):  # noqa: PLR0912
    """Problems of a survey_spec in AWX's format."""
    if not isinstance(survey, dict):
        return ["survey_spec is not a mapping"]
    errors = [f"survey_spec has no {key}" for key in ("name", "description", "spec") if key not in survey]
    spec = survey.get("spec")
    if not isinstance(spec, list) or not spec:
        return [*errors, "survey_spec.spec is not a non-empty list"]
    seen = set()
    allowed = {
        "question_name",
        "question_description",
        "variable",
        "type",
        "required",
        "default",
        "choices",
        "min",
        "max",
        "new_question",
    }
    for question in spec:
        if not isinstance(question, dict):
            errors.append(f"question {question!r} is not a mapping")
            continue
        var = question.get("variable")
        if not isinstance(var, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", var):
            errors.append(f"question {question.get('question_name')!r}: bad variable {var!r}")
            continue
        if var in seen:
            errors.append(f"{var}: asked twice")
        seen.add(var)
        errors += [f"{var}: unknown key {key}" for key in sorted(set(question) - allowed)]
        if not isinstance(question.get("question_name"), str) or not question["question_name"]:
            errors.append(f"{var}: no question_name")
        if question.get("type") not in SURVEY_TYPES:
            errors.append(f"{var}: type {question.get('type')!r} is not one of {sorted(SURVEY_TYPES)}")
            continue
        if not isinstance(question.get("required"), bool):
            errors.append(f"{var}: required is not a boolean")
        if question["type"] in CHOICE_TYPES:
            choices = _choices(question)
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                errors.append(f"{var}: {question['type']} needs a non-empty list of string choices")
                continue
            if len(set(choices)) != len(choices):
                errors.append(f"{var}: duplicate choices")
        elif "choices" in question:
            errors.append(f"{var}: choices on a {question['type']} question")
        for bound in ("min", "max"):
            if question.get(bound) not in (None, "") and not _is_int(question[bound]):
                errors.append(f"{var}: {bound} is not an integer")
        if (
            _is_int(question.get("min"))
            and _is_int(question.get("max"))
            and question["min"] > question["max"]
        ):
            errors.append(f"{var}: min above max")
        if question["type"] == "password" and "default" in question:
            errors.append(f"{var}: a password question has a default (a secret in the template)")
        elif "default" in question:
            errors += _default_errors(question)
        if SECRET_NAME.search(var) and question["type"] != "password":
            errors.append(f"{var}: looks like a secret but is a {question['type']} question (shown in clear)")
    return errors


# ---------------------------------------------------------------------------------------------
# Playbooks -> roles and entry points -> argument specs


def _role_name(name):
    return name.split(".")[-1]


def _task_roles(tasks):
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            yield from _task_roles(task.get(key))
        for action in (
            "ansible.builtin.include_role",
            "ansible.builtin.import_role",
            "include_role",
            "import_role",
        ):
            if action in task:
                args = task[action]
                yield _role_name(args["name"]), args.get("tasks_from", "main")


def playbook_roles(path):
    """[(role, entry point)] that a playbook runs, import_playbook followed."""
    with open(path) as handle:
        plays = yaml.safe_load(handle) or []
    found = []
    for play in plays:
        for key in ("ansible.builtin.import_playbook", "import_playbook"):
            if key in play:
                found += playbook_roles(os.path.normpath(os.path.join(os.path.dirname(path), play[key])))
        for role in play.get("roles") or []:
            name = role["role"] if isinstance(role, dict) else role
            found.append((_role_name(name), "main"))
        for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            found += list(_task_roles(play.get(key)))
    return found


def role_entry_spec(role, entry):
    """The options of a role's entry point (its main one when tasks_from has none of its own)."""
    with open(os.path.join(ROLES, role, "meta", "argument_specs.yml")) as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    spec = specs.get(entry) or specs.get("main") or {}
    return spec.get("options") or {}


def role_options(playbook):
    """variable -> [its spec in each role entry point the playbook runs]."""
    options = {}
    for role, entry in playbook_roles(os.path.join(REPO, playbook)):
        for var, spec in role_entry_spec(role, entry).items():
            options.setdefault(var, []).append(spec)
    return options


def survey_role_errors(template, options=None):
    """Survey variables that the roles of the template's playbook do not take, or take as another type."""
    options = role_options(template["playbook"]) if options is None else options
    errors = []
    for question in (template.get("survey_spec") or {}).get("spec", []):
        var, kind = question["variable"], question["type"]
        if var not in options:
            errors.append(
                f"{template['name']}: {var} is no variable of the roles {template['playbook']} runs"
            )
            continue
        for spec in options[var]:
            role_type = spec.get("type", "str")
            if role_type not in COMPATIBLE[kind]:
                errors.append(
                    f"{template['name']}: {var} is a {kind} question but the role takes {role_type}"
                )
                continue
            role_choices = spec.get("choices")
            if kind in CHOICE_TYPES and role_choices and not set(_choices(question)) <= set(role_choices):
                errors.append(
                    f"{template['name']}: {var} offers {_choices(question)}, the role takes {role_choices}"
                )
            if "default" in question and "default" in spec and question["default"] != spec["default"]:
                errors.append(
                    f"{template['name']}: {var} defaults to {question['default']!r}, "
                    f"the role to {spec['default']!r}"
                )
    return errors


def needed_credentials(playbook):
    """The credential types the roles of a playbook read."""
    needed = set()
    runs = playbook_roles(os.path.join(REPO, playbook))
    with open(os.path.join(REPO, playbook)) as handle:
        module_defaults = 'kubeconfig: "{{ strata_kubeconfig' in handle.read()
    if module_defaults or any("strata_kubeconfig" in role_entry_spec(role, entry) for role, entry in runs):
        needed.add("kubeconfig")
    if any(role == "runner_isolation" for role, _entry in runs):
        needed.add("gitlab")
    if ("data_miner", "deploy") in runs:
        needed.add("hf_token")
    return needed


# ---------------------------------------------------------------------------------------------
# Credential types


def _template_names(text):
    env = jinja2.Environment()
    return jinja2.meta.find_undeclared_variables(env.parse(text))


def credential_type_errors(key, ctype):  # noqa: PLR0912
    errors = []
    fields = ctype.get("inputs", {}).get("fields", [])
    ids = [field["id"] for field in fields]
    if len(set(ids)) != len(ids):
        errors.append(f"{key}: duplicate input ids")
    for field in fields:
        if SECRET_NAME.search(field["id"]) and field.get("secret") is not True:
            errors.append(f"{key}: input {field['id']} is a secret without secret: true")
        if field.get("secret") and "default" in field:
            errors.append(f"{key}: secret input {field['id']} has a default")
    errors += [
        f"{key}: required input {r} is not declared"
        for r in ctype["inputs"].get("required", [])
        if r not in ids
    ]
    injectors = ctype.get("injectors", {})
    errors += [f"{key}: unknown injector section {s}" for s in set(injectors) - {"env", "file", "extra_vars"}]
    files = {name.split(".", 1)[1] for name in injectors.get("file", {}) if name.startswith("template.")}
    if set(injectors.get("file", {})) - {"template"} - {f"template.{f}" for f in files}:
        errors.append(f"{key}: file injectors must be named template or template.NAME")
    for section, values in injectors.items():
        for name, text in values.items():
            if section == "env" and not ENV_NAME.match(name):
                errors.append(f"{key}: bad environment variable name {name}")
            for var in _template_names(text):
                if var not in ids and var not in ("tower", "awx"):
                    errors.append(f"{key}: injector {section}.{name} uses {var}, which is no input")
            for ref in re.findall(r"(?:tower|awx)\.filename\.(\w+)", text):
                if ref not in files:
                    errors.append(f"{key}: injector {section}.{name} names file {ref}, which is not injected")
            if section == "extra_vars":
                secret = [f["id"] for f in fields if f.get("secret") and f["id"] in _template_names(text)]
                errors += [
                    f"{key}: secret {s} injected as an extra var (in clear in the job)" for s in secret
                ]
    return errors


# ---------------------------------------------------------------------------------------------
# Workflows


def workflow_errors(workflow, templates):
    """The site workflow: layers 1-5 in order, each node running the next on success only."""
    errors = []
    by_name = {t["name"]: t for t in templates}
    nodes = workflow["nodes"]
    identifiers = [n["identifier"] for n in nodes]
    if len(set(identifiers)) != len(identifiers):
        errors.append("duplicate node identifiers")
    layers = sorted(os.path.basename(p) for p in glob.glob(os.path.join(PLAYBOOKS, "layer*_*.yml")))
    playbooks = [
        by_name[n["job_template"]]["playbook"] if n["job_template"] in by_name else None for n in nodes
    ]
    if None in playbooks:
        errors.append("a node runs a job template that does not exist")
    if playbooks != [f"playbooks/{layer}" for layer in layers]:
        errors.append(f"nodes run {playbooks}, not the layers in order")
    for index, node in enumerate(nodes):
        want = [identifiers[index + 1]] if index + 1 < len(nodes) else []
        if node.get("success_nodes", []) != want:
            errors.append(
                f"{node['identifier']}: success_nodes {node.get('success_nodes')} instead of {want}"
            )
        for other in ("failure_nodes", "always_nodes"):
            if node.get(other):
                errors.append(f"{node['identifier']}: {other} would run after a failed layer")
    return errors


# =============================================================================================
# Tests


def test_configure_renders_every_entry(configure):
    counts = {module: len(params) for _name, module, params in configure}
    assert counts == {
        "organization": 1,
        "credential_type": len(load("credential_types.yml")),
        "execution_environment": 1,
        "project": 1,
        "inventory": 1,
        "inventory_source": 1,
        "job_template": len(load("job_templates.yml")),
        "workflow_job_template": len(load("workflows.yml")),
        "workflow_job_template_node": sum(len(w["nodes"]) for w in load("workflows.yml")),
    }


@pytest.mark.parametrize(
    "module",
    [
        "organization",
        "credential_type",
        "execution_environment",
        "project",
        "inventory",
        "inventory_source",
        "job_template",
        "workflow_job_template",
        "workflow_job_template_node",
    ],
)
def test_configure_params_validate_against_the_module_spec(configure, module):
    checked = 0
    for name, task_module, params in configure:
        if task_module != module:
            continue
        for one in params:
            assert param_errors(module, one) == [], (name, one.get("name") or one.get("identifier"))
            checked += 1
    assert checked


def test_configure_passes_the_data_unchanged(configure):
    templates = {p["name"]: p for _n, m, params in configure if m == "job_template" for p in params}
    for entry in load("job_templates.yml"):
        params = templates[entry["name"]]
        assert params["playbook"] == entry["playbook"]
        assert params.get("survey_spec") == entry.get("survey_spec")
        assert params["survey_enabled"] is ("survey_spec" in entry)
        assert params["execution_environment"] == "strata-ops-ee"
        assert params["credentials"] == [
            SAMPLE_EXTRA_VARS["strata_awx_credentials"][k] for k in entry["credentials"]
        ]
    types = {p["name"]: p for _n, m, params in configure if m == "credential_type" for p in params}
    for ctype in load("credential_types.yml").values():
        # the injector templates reach AWX as written (rendered by AWX at job time, not here)
        assert types[ctype["name"]]["injectors"] == ctype["injectors"]
        assert types[ctype["name"]]["inputs"] == ctype["inputs"]
    ee = next(p for _n, m, params in configure if m == "execution_environment" for p in params)
    with open(os.path.join(REPO, "galaxy.yml")) as handle:
        version = yaml.safe_load(handle)["version"]
    assert ee["image"] == f"strata-ops-ee:{version}"


def test_configure_takes_the_image_tag_and_scm_url_from_variables():
    rendered = render_configure(
        {"strata_awx_ee_tag": "1.2.3", "strata_awx_scm_url": "https://git.example.com/o.git"}
    )
    by_module = {m: params for _n, m, params in rendered}
    assert by_module["execution_environment"][0]["image"] == "strata-ops-ee:1.2.3"
    assert by_module["project"][0]["scm_url"] == "https://git.example.com/o.git"


def test_configure_omits_credentials_nobody_mapped():
    rendered = render_configure({"strata_awx_credentials": {}})
    for _name, module, params in rendered:
        if module == "job_template":
            assert all("credentials" not in p for p in params)  # never [] (that would detach them)


def test_workflow_nodes_are_created_last_first(configure):
    nodes = next(params for _n, m, params in configure if m == "workflow_job_template_node")
    created = set()
    for node in nodes:
        assert set(node["success_nodes"]) <= created, node["identifier"]
        created.add(node["identifier"])


def test_module_spec_validation_catches_broken_params(configure):
    template = copy.deepcopy(next(p for _n, m, params in configure if m == "job_template" for p in params))
    assert param_errors("job_template", template) == []
    unknown = dict(template, playbok=template["playbook"])
    assert any("playbok" in e for e in param_errors("job_template", unknown))
    bad_choice = dict(template, job_type="dry-run")
    assert any("job_type" in e for e in param_errors("job_template", bad_choice))
    bad_type = dict(template, survey_spec=["not", "a", "dict"])
    assert any("survey_spec" in e for e in param_errors("job_template", bad_type))
    bad_bool = dict(template, ask_limit_on_launch="sometimes")
    assert any("ask_limit_on_launch" in e for e in param_errors("job_template", bad_bool))
    node = copy.deepcopy(
        next(p for _n, m, params in configure if m == "workflow_job_template_node" for p in params)
    )
    both = dict(node, approval_node={"name": "ok?"})
    assert any("mutually exclusive" in e for e in param_errors("workflow_job_template_node", both))
    ctype = dict(
        next(p for _n, m, params in configure if m == "credential_type" for p in params), kind="kubernetes"
    )
    assert any("kind" in e for e in param_errors("credential_type", ctype))


def test_broken_data_fails_validation_after_rendering():
    broken = copy.deepcopy(load("job_templates.yml"))
    broken[0]["ask_inventory_on_launch"] = "perhaps"
    rendered = render_configure({"strata_awx_job_templates": broken})
    params = next(
        p for _n, m, ps in rendered if m == "job_template" for p in ps if p["name"] == broken[0]["name"]
    )
    assert any("ask_inventory_on_launch" in e for e in param_errors("job_template", params))


@pytest.mark.parametrize("template", load("job_templates.yml"), ids=lambda t: t["name"])
def test_survey_is_valid_awx_format(template):
    if "survey_spec" in template:
        assert survey_errors(template["survey_spec"]) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda q: q.update(type="checkbox"), "type 'checkbox'"),
        (lambda q: q.update(type="multiplechoice"), "needs a non-empty list of string choices"),
        (lambda q: q.update(type="integer", default="3"), "is not an integer"),
        (lambda q: q.update(type="text", default=3), "is not a string"),
        (
            lambda q: q.update(type="multiplechoice", choices=["a", "b"], default="c"),
            "not one of the choices",
        ),
        (lambda q: q.update(type="multiselect", choices=["a", "b"], default="a"), "is not a list"),
        (lambda q: q.update(type="password", default="hunter2"), "password question has a default"),
        (lambda q: q.update(variable="gitlab_token"), "looks like a secret"),
        (lambda q: q.update(required="yes"), "required is not a boolean"),
        (lambda q: q.update(min=10, max=2), "min above max"),
        (lambda q: q.update(type="integer", default=0, min=1), "below min"),
        (lambda q: q.update(defualt="x"), "unknown key defualt"),
        (lambda q: q.pop("question_name"), "no question_name"),
    ],
)
def test_survey_check_catches_broken_questions(change, expected):
    survey = {
        "name": "s",
        "description": "d",
        "spec": [{"question_name": "Q", "variable": "v", "type": "text", "required": False}],
    }
    assert survey_errors(survey) == []
    change(survey["spec"][0])
    errors = survey_errors(survey)
    assert any(expected in e for e in errors), errors


def test_survey_check_catches_a_broken_survey():
    assert "survey_spec has no description" in survey_errors({"name": "s", "spec": [{}]})
    assert any("non-empty list" in e for e in survey_errors({"name": "s", "description": "", "spec": []}))
    twice = {"question_name": "Q", "variable": "v", "type": "text", "required": False}
    assert "v: asked twice" in survey_errors({"name": "s", "description": "", "spec": [twice, twice]})


def test_playbook_parser_follows_roles_includes_and_imports():
    assert playbook_roles(os.path.join(PLAYBOOKS, "site.yml")) == [
        ("base_system", "main"),
        ("host_storage", "main"),
        ("cluster", "main"),
        ("cluster", "controller"),
        ("workload_storage", "main"),
        ("workload_deploy", "main"),
    ]
    assert ("workload_lifecycle", "wipe_confirm") in playbook_roles(os.path.join(PLAYBOOKS, "teardown.yml"))
    provision = playbook_roles(os.path.join(PLAYBOOKS, "data_miner", "provision.yml"))
    assert {
        ("base_system", "main"),
        ("cluster", "k3s"),
        ("data_miner", "host_dirs"),
        ("data_miner", "images"),
    } <= set(provision)


@pytest.mark.parametrize("template", load("job_templates.yml"), ids=lambda t: t["name"])
def test_survey_variables_are_the_roles_variables(template):
    assert survey_role_errors(template) == []


def _template(playbook, question):
    spec = {
        "name": "s",
        "description": "",
        "spec": [dict({"question_name": "Q", "required": False}, **question)],
    }
    return {"name": "t", "playbook": playbook, "survey_spec": spec}


@pytest.mark.parametrize(
    ("playbook", "question", "expected"),
    [
        ("playbooks/stop.yml", {"variable": "confirm_wipe", "type": "text"}, "is no variable of the roles"),
        (
            "playbooks/stop.yml",
            {"variable": "pod_checkpoint_pod", "type": "text"},
            "is no variable of the roles",
        ),
        (
            "playbooks/layer5_deploy.yml",
            {"variable": "workload_deploy_replicas", "type": "text"},
            "role takes int",
        ),
        (
            "playbooks/teardown.yml",
            {"variable": "workload_lifecycle_wipe", "type": "text"},
            "role takes list",
        ),
        (
            "playbooks/teardown.yml",
            {"variable": "workload_lifecycle_confirm_wipe", "type": "multiselect", "choices": ["a"]},
            "role takes str",
        ),
        (
            "playbooks/checkpoint.yml",
            {"variable": "pod_checkpoint_method", "type": "multiplechoice", "choices": ["criu", "podman"]},
            "offers",
        ),
        (
            "playbooks/checkpoint.yml",
            {"variable": "pod_checkpoint_keep", "type": "integer", "default": 5},
            "defaults to 5",
        ),
        (
            "playbooks/health_check.yml",
            {"variable": "health_check_fail_on_problems", "type": "text"},
            "role takes bool",
        ),
    ],
)
def test_role_check_catches_wrong_variables(playbook, question, expected):
    errors = survey_role_errors(_template(playbook, question))
    assert any(expected in e for e in errors), errors


def test_every_playbook_has_a_template_and_every_template_a_playbook():
    templates = load("job_templates.yml")
    playbooks = [t["playbook"] for t in templates]
    found = sorted(
        os.path.relpath(p, REPO)
        for p in glob.glob(os.path.join(PLAYBOOKS, "**", "*.yml"), recursive=True)
        if os.path.dirname(p) != os.path.join(PLAYBOOKS, "tasks")  # task files the playbooks include
    )
    assert sorted(playbooks) == found
    assert len(set(playbooks)) == len(playbooks)
    assert len({t["name"] for t in templates}) == len(templates)


def test_templates_carry_the_credentials_their_roles_read():
    types = set(load("credential_types.yml")) | {"machine"}
    for template in load("job_templates.yml"):
        assert set(template.get("credentials", [])) <= types, template["name"]
        missing = needed_credentials(template["playbook"]) - set(template.get("credentials", []))
        assert not missing, (template["name"], missing)
    assert needed_credentials("playbooks/experiment_enter.yml") == {"kubeconfig", "gitlab"}
    assert needed_credentials("playbooks/data_miner/deploy.yml") == {"kubeconfig", "hf_token"}


@pytest.mark.parametrize(("key", "ctype"), load("credential_types.yml").items())
def test_credential_type_injectors_use_declared_inputs(key, ctype):
    assert credential_type_errors(key, ctype) == []
    assert all(f.get("secret") for f in ctype["inputs"]["fields"] if SECRET_NAME.search(f["id"]))


def test_credential_types_inject_what_the_roles_read():
    types = load("credential_types.yml")
    assert set(types["kubeconfig"]["injectors"]["env"]) == {"K8S_AUTH_KUBECONFIG", "KUBECONFIG"}
    assert types["kubeconfig"]["injectors"]["extra_vars"] == {
        "strata_kubeconfig": "{{ tower.filename.kubeconfig }}"
    }
    assert types["gitlab"]["injectors"]["env"] == {"GITLAB_TOKEN": "{{ token }}"}
    assert types["hf_token"]["injectors"]["env"] == {"HF_TOKEN": "{{ hf_token }}"}
    with open(os.path.join(ROLES, "runner_isolation", "defaults", "main.yml")) as handle:
        assert "lookup('ansible.builtin.env', 'GITLAB_TOKEN')" in handle.read()
    with open(os.path.join(ROLES, "data_miner", "tasks", "deploy.yml")) as handle:
        assert "lookup('ansible.builtin.env', 'HF_TOKEN')" in handle.read()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["injectors"]["env"].update(X="{{ tokn }}"), "uses tokn, which is no input"),
        (lambda c: c["injectors"]["env"].update(X="{{ tower.filename.other }}"), "names file other"),
        (lambda c: c["inputs"]["fields"][0].pop("secret"), "without secret: true"),
        (lambda c: c["inputs"]["fields"][0].update(default="abc"), "has a default"),
        (lambda c: c["inputs"]["required"].append("ca"), "required input ca is not declared"),
        (lambda c: c["injectors"].update(extra_vars={"t": "{{ token }}"}), "injected as an extra var"),
        (lambda c: c["injectors"]["env"].update({"bad-name": "x"}), "bad environment variable name"),
        (lambda c: c["injectors"].update(files={}), "unknown injector section"),
    ],
)
def test_credential_type_check_catches_broken_types(change, expected):
    ctype = {
        "inputs": {
            "fields": [{"id": "token", "label": "T", "type": "string", "secret": True}],
            "required": ["token"],
        },
        "injectors": {"env": {"TOKEN": "{{ token }}"}},
    }
    assert credential_type_errors("t", ctype) == []
    change(ctype)
    errors = credential_type_errors("t", ctype)
    assert any(expected in e for e in errors), errors


def test_no_secret_in_templates_or_extra_vars():
    for template in load("job_templates.yml"):
        assert "extra_vars" not in template, template["name"]
        for question in (template.get("survey_spec") or {}).get("spec", []):
            assert not SECRET_NAME.search(question["variable"]) or "default" not in question, template["name"]
    with open(os.path.join(AWX, "configure.yml")) as handle:
        text = handle.read()
    assert "extra_vars:" not in text  # the templates take no extra vars from configure.yml


def test_site_workflow_runs_the_layers_on_success_only():
    templates = load("job_templates.yml")
    (site,) = load("workflows.yml")
    assert workflow_errors(site, templates) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda w: w["nodes"][1].update(success_nodes=["layer4_workload_storage"]), "instead of"),
        (lambda w: w["nodes"][2].update(failure_nodes=["layer4_workload_storage"]), "after a failed layer"),
        (lambda w: w["nodes"][0].update(always_nodes=["layer2_host_storage"]), "after a failed layer"),
        (lambda w: w["nodes"].reverse(), "not the layers in order"),
        (lambda w: w["nodes"][4].update(job_template="strata-ops nothing"), "does not exist"),
        (lambda w: w["nodes"].pop(), "not the layers in order"),
    ],
)
def test_workflow_check_catches_broken_workflows(change, expected):
    (site,) = copy.deepcopy(load("workflows.yml"))
    change(site)
    errors = workflow_errors(site, load("job_templates.yml"))
    assert any(expected in e for e in errors), errors
