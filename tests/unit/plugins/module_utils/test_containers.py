"""crictl_argv and crictl_target of plugins/module_utils/containers.py: the crictl calls and their
answers.

The real crictl and containerd are exercised by tests/integration/test_pod_checkpoint.py;
these cases cover the answers that test bed does not produce (several containers, no pid).
"""

import json

import pytest

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr

ENDPOINT = "unix:///run/k3s/containerd/containerd.sock"
CRICTL = ctr.crictl_argv("crictl", ENDPOINT)


def crictl_stub(ps, inspect=None, calls=None):
    def run(argv):
        if calls is not None:
            calls.append(argv)
        if argv[len(CRICTL)] == "ps":
            return 0, json.dumps({"containers": ps}), ""
        return 0, json.dumps(inspect or {}), ""

    return run


def test_crictl_argv_gives_every_call_the_kubelets_patience():
    # crictl's own default is 2 s per call: a loaded node answers slower
    assert CRICTL == ["crictl", "--timeout", "60s", "--runtime-endpoint", ENDPOINT]
    # no endpoint: crictl's own configuration (/etc/crictl.yaml) or its default sockets
    assert ctr.crictl_argv("/usr/bin/crictl", None) == ["/usr/bin/crictl", "--timeout", "60s"]


def container(name, cid="c1"):
    return {"id": cid, "metadata": {"name": name}, "image": {"image": "app:1"}, "imageRef": "sha256:ab"}


def test_crictl_target_filters_by_kubelet_labels_through_the_endpoint():
    calls = []
    run = crictl_stub([container("app")], {"info": {"pid": 4242}}, calls)
    target = ctr.crictl_target(run, CRICTL, "web-0", "prod", "app")
    assert calls[0] == [
        *CRICTL,
        "ps",
        "-o",
        "json",
        "--label",
        "io.kubernetes.pod.name=web-0",
        "--label",
        "io.kubernetes.pod.namespace=prod",
        "--name",
        "^app$",
    ]
    assert calls[1] == [*CRICTL, "inspect", "-o", "json", "c1"]
    assert (target["runtime"], target["pid"], target["container_name"]) == ("cri", 4242, "app")


@pytest.mark.parametrize(
    ("ps", "inspect", "expected"),
    [
        ([], None, "crictl finds no running container of pod prod/web-0"),
        ([container("app"), container("sidecar", "c2")], None, r"several containers .*app.*sidecar"),
        ([container("app")], {"info": {}}, "reports no pid"),
    ],
)
def test_crictl_target_says_what_is_wrong(ps, inspect, expected):
    with pytest.raises(ctr.TargetNotFound, match=expected):
        ctr.crictl_target(crictl_stub(ps, inspect), CRICTL, "web-0", "prod", None)


def test_crictl_failure_points_at_the_endpoint():
    with pytest.raises(ctr.RuntimeUnavailable, match="Set cri_endpoint"):
        ctr.crictl_target(lambda argv: (1, "", "connect: no such file or directory"), CRICTL, "p", "n", "c")


def test_bind_sources_and_their_replacement():
    create = {
        "HostConfig": {
            "Binds": ["/srv/kind:/x:rslave", "named-volume:/cache", "/etc/app.conf:/etc/app.conf:ro"],
            "Mounts": [
                {"Type": "bind", "Source": "/srv/kind/solana/ramdisk", "Target": "/x/ramdisk"},
                {"Type": "tmpfs", "Target": "/scratch"},
            ],
        }
    }
    assert ctr.bind_sources(create) == ["/srv/kind", "/etc/app.conf", "/srv/kind/solana/ramdisk"]
    ctr.replace_bind_source(create, "/srv/kind", "/run/strata-ops/restore/app/0")
    ctr.replace_bind_source(create, "/srv/kind/solana/ramdisk", "/run/strata-ops/restore/app/1")
    assert create["HostConfig"]["Binds"][0] == "/run/strata-ops/restore/app/0:/x:rslave"
    assert create["HostConfig"]["Binds"][1:] == ["named-volume:/cache", "/etc/app.conf:/etc/app.conf:ro"]
    assert create["HostConfig"]["Mounts"][0]["Source"] == "/run/strata-ops/restore/app/1"
