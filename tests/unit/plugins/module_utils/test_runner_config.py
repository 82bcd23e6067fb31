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
