"""The strata.ops.sysctl_drift filter: which wanted kernel settings are not in effect."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.sysctl_drift import FilterModule, sysctl_drift

WANTED = {"vm.max_map_count": 1000000, "net.ipv4.tcp_rmem": "4096 87380 6291456", "fs.nr_open": 1000000}


def test_nothing_drifts_when_the_kernel_prints_the_wanted_values():
    assert sysctl_drift(WANTED, "1000000\n4096\t87380\t6291456\n1000000\n") == []


def test_each_differing_setting_is_named_with_its_running_value_in_key_order():
    assert sysctl_drift(WANTED, "65530\n4096\t87380\t6291456\n1048576") == [
        "vm.max_map_count=65530",
        "fs.nr_open=1048576",
    ]


def test_a_count_mismatch_is_an_error_not_a_silent_pass():
    with pytest.raises(AnsibleFilterError, match="printed 1 values for 3 settings"):
        sysctl_drift(WANTED, "1000000\n")


def test_no_settings_no_drift():
    assert sysctl_drift({}, "") == []


def test_registered_under_its_name():
    assert FilterModule().filters()["sysctl_drift"] is sysctl_drift
