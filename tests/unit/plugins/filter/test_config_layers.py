"""The strata.ops.config_layers filter: defaults, a run's config and overrides into one mapping."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.config_layers import FilterModule, config_layers

DEFAULTS = {
    "output_dir": "/data/out",
    "device": "cpu",
    "download": {"workers": 4, "formats": ["mp4", "webm"], "retry": {"count": 3, "wait": 5}},
    "filter": {"model": "small", "threshold": 0.5},
}
RUN = {"download": {"workers": 8, "retry": {"wait": 10}}, "filter": {"threshold": 0.7}}
OVERRIDES = {"output_dir": "/swdfs_mnt/swshared/data_miner_output", "device": "auto"}
NAMES = ["defaults", "run config", "k3s_app_overrides"]


def test_later_layers_win_key_by_key_at_every_depth():
    assert config_layers([DEFAULTS, RUN, OVERRIDES]) == {
        "output_dir": "/swdfs_mnt/swshared/data_miner_output",
        "device": "auto",
        "download": {"workers": 8, "formats": ["mp4", "webm"], "retry": {"count": 3, "wait": 10}},
        "filter": {"model": "small", "threshold": 0.7},
    }


def test_the_layers_are_not_changed():
    before = repr(DEFAULTS)
    config_layers([DEFAULTS, RUN, OVERRIDES])
    assert repr(DEFAULTS) == before


def test_lists_are_replaced_whole_and_null_removes_a_key():
    merged = config_layers([DEFAULTS, {"download": {"formats": ["mkv"], "retry": None}, "filter": None}])
    assert merged["download"] == {"workers": 4, "formats": ["mkv"]}
    assert "filter" not in merged


def test_provenance_names_the_layer_of_every_leaf():
    result = config_layers([DEFAULTS, RUN, OVERRIDES], names=NAMES, provenance=True)
    origin = result["provenance"]
    assert origin["output_dir"] == "k3s_app_overrides"
    assert origin["download.workers"] == "run config"
    assert origin["download.retry.count"] == "defaults"
    assert origin["download.retry.wait"] == "run config"
    assert origin["filter.model"] == "defaults"


def test_a_null_layer_is_skipped_and_a_null_key_leaves_no_provenance():
    result = config_layers([DEFAULTS, None, {"filter": None}], provenance=True)
    assert not any(key.startswith("filter") for key in result["provenance"])


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([DEFAULTS, ["not", "a", "mapping"]], "layer 2 is a list, not a mapping"),
        (
            [DEFAULTS, {"download": "fast"}],
            "layer 2 sets download to 'fast', but an earlier layer made it a mapping",
        ),
        (
            [DEFAULTS, {"device": {"kind": "gpu"}}],
            "layer 2 makes device a mapping, but an earlier layer set it to 'cpu'",
        ),
    ],
)
def test_conflicts_name_the_layer_and_the_key(layers, message):
    with pytest.raises(AnsibleFilterError, match=message):
        config_layers(layers)


def test_replacing_a_mapping_with_a_value_takes_a_null_first():
    merged = config_layers([DEFAULTS, {"download": None}, {"download": "fast"}])
    assert merged["download"] == "fast"


def test_names_must_match_the_layers():
    with pytest.raises(AnsibleFilterError, match="2 names for 3 layers"):
        config_layers([DEFAULTS, RUN, OVERRIDES], names=["a", "b"])


def test_registered_under_its_name():
    assert FilterModule().filters()["config_layers"] is config_layers


def test_an_empty_string_over_a_default_is_merged_with_a_warning_naming_it():
    result = config_layers(
        [{"db": {"host": "postgres", "user": "miner"}}, {"db": {"host": ""}}, {"db": {"user": ""}}],
        names=["defaults", "run config", "k3s_app_overrides"],
        provenance=True,
    )
    assert result["config"] == {"db": {"host": "", "user": ""}}
    assert result["warnings"] == [
        "run config sets db.host to an empty string over defaults's 'postgres'; the application gets ''. "
        "Take the key out of run config to keep 'postgres'",
        "k3s_app_overrides sets db.user to an empty string over defaults's 'miner'; the application gets ''. "
        "Take the key out of k3s_app_overrides to keep 'miner'",
    ]
    quiet = config_layers([{"a": ""}, {"a": ""}, {"b": ""}], provenance=True)
    assert quiet["warnings"] == []  # nothing hidden: no warning
