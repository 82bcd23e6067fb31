"""runner_config: config.toml edits with tomlkit (map form, rejections, comments kept)."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import runner_config as rc
from ansible_collections.strata.ops.plugins.module_utils import state

CONFIG = """\
# gitlab-runner config (managed by hand)
concurrent = 4  # jobs at once
check_interval = 3

[session_server]
  session_timeout = 1800

[[runners]]
  # the cluster runner
  name = "k8s"
  url = "https://gitlab.example/"
  token = "glrt-x"
  executor = "kubernetes"
  [runners.kubernetes]
    image = "gcc:14"  # default image
    namespace = "gitlab-runner"
    [runners.kubernetes.pod_labels]
      team = "ci"

[[runners]]
  name = "metal"
  executor = "shell"
"""

SETTINGS = dict(
    concurrent=1,
    node_selector={"kubernetes.io/hostname": "talos-say-ls6"},
    node_tolerations={rc.toleration_key("experiment", "dedicated"): "NoSchedule"},
    cpu_request="2000m",
    memory_request="2Gi",
)


def test_map_form_and_executor_keys():
    new, changed = rc.edit(CONFIG, **SETTINGS)
    assert changed == ["<global>", "k8s"]
    doc = rc.parse(new)
    kube = doc["runners"][0]["kubernetes"]
    assert dict(kube["node_tolerations"]) == {"experiment=dedicated": "NoSchedule"}
    assert dict(kube["node_selector"]) == {"kubernetes.io/hostname": "talos-say-ls6"}
    assert kube["cpu_request"] == "2000m" and kube["memory_request"] == "2Gi"
    assert doc["concurrent"] == 1
    assert "[runners.kubernetes.node_tolerations]" in new
    assert "[[runners.kubernetes.node_tolerations]]" not in new
    assert '"experiment=dedicated" = "NoSchedule"' in new
    assert "resources" not in kube
    assert "kubernetes" not in doc["runners"][1]  # the shell runner is left alone
    again, changed_again = rc.edit(new, **SETTINGS)
    assert again == new and changed_again == []


def test_toleration_key_forms():
    assert rc.toleration_key("experiment", "dedicated") == "experiment=dedicated"
    assert rc.toleration_key("node-role.kubernetes.io/master", "") == "node-role.kubernetes.io/master"


def test_comments_and_order_kept():
    new = rc.edit(CONFIG, **SETTINGS)[0]
    for line in (
        "# gitlab-runner config (managed by hand)",
        "concurrent = 1  # jobs at once",
        "  # the cluster runner",
        '    image = "gcc:14"  # default image',
        "    [runners.kubernetes.pod_labels]",
    ):
        assert line in new
    order = [new.index(s) for s in ("check_interval", "[session_server]", 'name = "k8s"', 'name = "metal"')]
    assert order == sorted(order)


@pytest.mark.parametrize(
    ("block", "fragments"),
    [
        (
            '    [[runners.kubernetes.node_tolerations]]\n      key = "experiment"\n'
            '      value = "dedicated"\n      effect = "NoSchedule"\n',
            ["[[runners.kubernetes.node_tolerations]]", "map form", '"experiment=dedicated" = "NoSchedule"'],
        ),
        (
            '    [runners.kubernetes.resources.requests]\n      cpu = "2000m"\n      memory = "2Gi"\n',
            [
                "ignored",
                "resources.requests.cpu -> cpu_request",
                "resources.requests.memory -> memory_request",
            ],
        ),
    ],
    ids=["array-of-tables", "resources-requests"],
)
def test_ignored_forms_rejected_with_the_fix(block, fragments):
    bad = CONFIG.replace("    [runners.kubernetes.pod_labels]", block + "    [runners.kubernetes.pod_labels]")
    with pytest.raises(rc.RunnerConfigError) as err:
        rc.edit(bad, **SETTINGS)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_parse_error_names_the_line():
    with pytest.raises(rc.RunnerConfigError, match=r"does not parse as TOML \(line 3"):
        rc.parse('concurrent = 1\n[[runners]]\nname = "unterminated\n')


def test_plain_runners_table_rejected():
    with pytest.raises(rc.RunnerConfigError, match=r"array of tables \(\[\[runners\]\]"):
        rc.parse('[runners]\nname = "x"\n')


def test_named_runner_must_exist():
    with pytest.raises(rc.RunnerConfigError, match="named 'nope'"):
        rc.edit(CONFIG, runner_names=["nope"], **SETTINGS)


def test_byte_for_byte_restore(tmp_path):
    """An edit never touches what restore writes back: the recorded bytes, unchanged."""
    original = CONFIG.replace("\n", "\r\n").encode("utf-8") + b"\n# trailing  \n"
    path = tmp_path / "config.toml"
    path.write_bytes(original)
    new = rc.edit(path.read_bytes(), **SETTINGS)[0]
    path.write_text(new)
    assert path.read_bytes() != original
    state.atomic_write_bytes(str(path), original)
    assert path.read_bytes() == original


def test_existing_map_entries_are_merged_not_replaced():
    text = CONFIG.replace(
        "    [runners.kubernetes.pod_labels]",
        '    cpu_request = "500m"\n    [runners.kubernetes.node_tolerations]\n'
        '      "storage" = "NoSchedule"\n    [runners.kubernetes.pod_labels]',
    )
    new = rc.edit(text, **SETTINGS)[0]
    kube = rc.parse(new)["runners"][0]["kubernetes"]
    assert dict(kube["node_tolerations"]) == {"storage": "NoSchedule", "experiment=dedicated": "NoSchedule"}
    assert kube["cpu_request"] == "2000m"
    assert new.count("[runners.kubernetes.node_tolerations]") == 1


def test_no_kubernetes_runner_to_edit():
    shell_only = '[[runners]]\n  name = "metal"\n  executor = "shell"\n'
    with pytest.raises(
        rc.RunnerConfigError, match='no \\[\\[runners\\]\\] entry with executor = "kubernetes"'
    ):
        rc.edit(shell_only, **SETTINGS)
    assert rc.edit(shell_only, concurrent=1)[1] == ["<global>"]  # concurrent alone needs none


def test_node_selector_replaced_not_merged():
    """A job pod goes only to a node with EVERY selected label: an old entry kept beside the pin
    would need that label on the experiment node too, so the pin replaces the entries."""
    text = CONFIG.replace(
        "    [runners.kubernetes.pod_labels]",
        '    [runners.kubernetes.node_selector]\n      "disktype" = "ssd"\n      "zone" = "a"\n'
        "    [runners.kubernetes.pod_labels]",
    )
    new, changed = rc.edit(text, **SETTINGS)
    assert changed == ["<global>", "k8s"]
    kube = rc.parse(new)["runners"][0]["kubernetes"]
    assert dict(kube["node_selector"]) == {"kubernetes.io/hostname": "talos-say-ls6"}
    assert new.count("[runners.kubernetes.node_selector]") == 1
    assert dict(kube["pod_labels"]) == {"team": "ci"}  # the tables after it are untouched
    assert rc.edit(new, **SETTINGS) == (new, [])  # idempotent


def test_existing_selector_must_map_strings():
    bad = CONFIG.replace(
        "    [runners.kubernetes.pod_labels]",
        "    [runners.kubernetes.node_selector]\n      zone = 1\n    [runners.kubernetes.pod_labels]",
    )
    with pytest.raises(rc.RunnerConfigError, match="map of string to string"):
        rc.parse(bad)


# Each verified against k8s.io/apimachinery v0.36.4 resource.ParseQuantity (the Go module of the
# test bed's control plane), with the sign it reports: requests may not be negative.
VALID_QUANTITIES = [
    "500m",
    "2",
    "2Gi",
    "2G",
    "2000m",
    "0.5",
    "1.5Gi",
    "1e3",
    "1E3",
    "1E",
    "+1",
    "-0",
    "0",
    ".5",
]
VALID_QUANTITIES += ["1.", "1.G", ".", "-", "1e-9223372036854775808", "100n", "12Mi", "1Ki", "5e+2", "Ti"]
INVALID_QUANTITIES = [
    "2 GB",
    "lots",
    "",
    " 1",
    "1 ",
    "2GB",
    "2gi",
    "1e",
    "1ee5",
    "1Ki.",
    "1e-",
    ".e-10",
    "Pi",
]
INVALID_QUANTITIES += ["Ei", "1e9223372036854775808", ".e2147483648", "\u0661", "0x10", "1_000", "2Gi\n"]


@pytest.mark.parametrize("value", VALID_QUANTITIES)
def test_quantity_accepted_as_parsequantity_does(value):
    assert rc.quantity_problem(value) is None


@pytest.mark.parametrize("value", INVALID_QUANTITIES)
def test_quantity_refused_as_parsequantity_does(value):
    assert "is not a Kubernetes quantity" in rc.quantity_problem(value)


@pytest.mark.parametrize("value", ["-1", "-500m", "-0.1", "-1e-30"])
def test_negative_request_refused(value):
    assert "negative" in rc.quantity_problem(value)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"concurrent": -3}, "concurrent must be a positive integer (jobs at once), got -3"),
        ({"concurrent": 0}, "concurrent must be a positive integer"),
        ({"concurrent": 2**63}, "concurrent must be a positive integer"),
        ({"cpu_request": "lots"}, "cpu_request 'lots' is not a Kubernetes quantity"),
        ({"memory_request": "2 GB"}, "memory_request '2 GB' is not a Kubernetes quantity"),
        ({"cpu_request": ""}, "cpu_request '' is not a Kubernetes quantity"),
        ({"node_selector": {"zone": None}}, "node_selector value None of 'zone' is not a string"),
        ({"node_selector": {"zone": 1}}, "node_selector value 1 of 'zone' is not a string"),
        ({"node_selector": {"zone": {"a": "b"}}}, "is not a string"),
        ({"node_selector": {"bad key": "x"}}, "node_selector key 'bad key' is not a label name"),
        ({"node_selector": {"a/b/c": "x"}}, "has more than one '/'"),
        ({"node_selector": {"Example.com/x": "x"}}, "prefix that is not a DNS subdomain"),
        ({"node_selector": {"zone": "-a"}}, "is not a label value"),
        ({"node_selector": {"zone": "a" * 64}}, "is not a label value"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_settings_refused_before_anything_is_written(settings, fragment):
    """What gitlab-runner or Kubernetes would refuse (concurrent -3, cpu 'lots', memory '2 GB',
    a selector it cannot read) fails the edit with the reason; nothing is written."""
    with pytest.raises(rc.RunnerConfigError) as err:
        rc.edit(CONFIG, **settings)
    assert fragment in str(err.value)
    assert "not written" in str(err.value)


def test_label_rules():
    for key in ("kubernetes.io/hostname", "strata.ops/experiment", "zone", "a.b_c-d", "A" * 63):
        assert rc.label_key_problem(key) is None, key
    for key in ("", "/x", "x/", "-x", "a" * 64, "a b", "x\n"):
        assert rc.label_key_problem(key), key
    for value in ("", "dedicated", "talos-say-ls6", "A.b_c"):
        assert rc.label_value_problem(value) is None, value
    for value in ("a b", "-a", "a-", "x\n", None):
        assert rc.label_value_problem(value), value
