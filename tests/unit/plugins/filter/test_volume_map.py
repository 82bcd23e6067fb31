"""The strata.ops.volume_map filter: the host -> kind node mapping layer 5's PVs are built from."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.volume_map import FilterModule, volume_map

ROOTS = {"cluster_root": "/srv/kind", "kind_mount_root": "/mnt"}
NAMES = {"pv_prefix": "p-", "deployment": "d", "default_capacity": "1Gi"}
VOLUMES = [
    {"name": "ledger", "host_path": "/srv/kind/solana/ledger", "mount_path": "/data/ledger"},
    {
        "name": "accounts",
        "host_path": "/srv/kind/solana/ramdisk/accounts/",
        "mount_path": "/a",
        "capacity": "64Mi",
    },
]


def test_pv_pvc_and_the_path_the_kind_node_sees():
    got = volume_map(
        VOLUMES, **ROOTS, pv_prefix="strata-solana-", deployment="validator", default_capacity="1Ti"
    )
    assert got == [
        {
            "name": "ledger",
            "pv": "strata-solana-ledger",
            "pvc": "validator-ledger",
            "host_path": "/srv/kind/solana/ledger",
            "node_path": "/mnt/solana/ledger",
            "outside": False,
            "mount_path": "/data/ledger",
            "capacity": "1Ti",
        },
        {
            "name": "accounts",
            "pv": "strata-solana-accounts",
            "pvc": "validator-accounts",
            "host_path": "/srv/kind/solana/ramdisk/accounts",
            "node_path": "/mnt/solana/ramdisk/accounts",
            "outside": False,
            "mount_path": "/a",
            "capacity": "64Mi",
        },
    ]


@pytest.mark.parametrize(
    ("host_path", "node_path"),
    [
        ("/srv/kind", "/mnt"),  # the root itself
        ("/srv/kindling/x", None),  # a sibling with the root as a string prefix is outside
        ("/srv/other", None),
        ("/srv/kind/../other", None),
    ],
)
def test_outside_the_cluster_root_has_no_node_path(host_path, node_path):
    volume = {"name": "v", "host_path": host_path, "mount_path": "/v"}
    got = volume_map([volume], cluster_root="/srv/kind/", kind_mount_root="/mnt", **NAMES)
    assert got[0]["node_path"] == node_path
    assert got[0]["outside"] is (node_path is None)


def test_a_volume_without_its_paths_is_an_error():
    with pytest.raises(AnsibleFilterError, match="lacks host_path, mount_path"):
        volume_map([{"name": "v"}], **ROOTS, **NAMES)


def test_registered_under_its_name():
    assert FilterModule().filters() == {"volume_map": volume_map}
