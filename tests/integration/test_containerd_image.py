"""strata.ops.containerd_image against the test bed's real containerds: Debian bookworm's 1.6 and
trixie's 1.7 (the CRI runtimes of tests/testbed/cri/start [1.7]) and 2.3 (the real node's,
tests/testbed/node/start).

The image is the CRI workload image, saved with ``docker save`` and exported as an OCI layout by ctr.
Each case imports into a containerd namespace of its own (never k8s.io, which the kubelet uses), then
checks that a second run skips it, that check mode imports nothing, and that a wrong socket or a
file that is no image archive fails with the reason and changes nothing.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest
from testbed_paths import (  # tests/testbed, on sys.path by conftest
    CONTAINERD_RELEASES,
    containerd_of,
    lib_sh_value,
)

from .conftest import REPO, run_module
from .test_pod_checkpoint import _missing


@pytest.fixture(scope="module")
def runtimes():
    if os.geteuid() != 0:
        _missing("containerd needs root")
    for script, *args in (("cri/start",), ("cri/start", "1.7"), ("node/start",)):
        proc = subprocess.run(
            [os.path.join(REPO, "tests", "testbed", script), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            _missing(f"tests/testbed/{' '.join([script, *args])} failed: {proc.stderr.strip()[-1000:]}")
    return {release: containerd_of(release) for release in CONTAINERD_RELEASES}


@pytest.fixture(scope="module")
def archives(runtimes, tmp_path_factory):
    """The workload image as docker save wrote it, and as an OCI layout exported by ctr."""
    image = lib_sh_value("cri_image")
    where = tmp_path_factory.mktemp("archives")
    saved = where / "docker-save.tar"
    subprocess.run(["docker", "save", "-o", str(saved), image.removeprefix("docker.io/library/")], check=True)
    oci = where / "oci.tar"
    subprocess.run(
        [
            runtimes["1.6"].ctr,
            "--address",
            runtimes["1.6"].address,
            "-n",
            "k8s.io",
            "images",
            "export",
            str(oci),
            image,
        ],
        check=True,
    )
    return {"docker-save": saved, "oci": oci, "image": image}


@pytest.fixture
def namespace(runtimes):
    name = f"strata-it-{uuid.uuid4().hex[:6]}"
    yield name
    for runtime in runtimes.values():
        ctr = [runtime.ctr, "--address", runtime.address, "-n", name]
        listed = subprocess.run(
            [*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=False
        ).stdout.split()
        if listed:
            subprocess.run([*ctr, "images", "rm", "--sync", *listed], capture_output=True, check=False)
        subprocess.run([*ctr[:3], "namespaces", "rm", name], capture_output=True, check=False)


def held(runtime, namespace):
    argv = [runtime.ctr, "--address", runtime.address, "-n", namespace, "images", "ls", "-q"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()


@pytest.mark.parametrize("version", sorted(CONTAINERD_RELEASES))
@pytest.mark.parametrize("form", ["docker-save", "oci"])
def test_import_once_then_skip_the_same_image(runtimes, archives, namespace, version, form):
    runtime = runtimes[version]
    args = {
        "archive": str(archives[form]),
        "name": "data-miner:latest",
        "address": runtime.address,
        "namespace": namespace,
        "ctr_command": [runtime.ctr],
    }
    planned = run_module("containerd_image", args, check_mode=True)
    assert planned.get("failed") is not True, planned
    assert planned["changed"] is True and planned["before"] is None
    assert planned["command"][-3:] == ["images", "import", str(archives[form])]
    assert held(runtime, namespace) == []  # check mode imported nothing

    first = run_module("containerd_image", args)
    assert first.get("failed") is not True, first
    assert first["changed"] is True and first["image"] == "docker.io/library/data-miner:latest"
    assert first["digest"].startswith("sha256:")
    assert "docker.io/library/data-miner:latest" in held(runtime, namespace)

    again = run_module("containerd_image", args)
    assert again.get("failed") is not True and again["changed"] is False, again
    assert again["before"] == again["digest"] == first["digest"]
    assert "already in containerd" in again["msg"]

    # without name: the archive's own name
    own = run_module("containerd_image", {k: v for k, v in args.items() if k != "name"})
    assert own.get("failed") is not True, own
    assert own["image"] == archives["image"] and own["digest"] == first["digest"]


def test_wrong_socket_fails_with_the_reason(runtimes, archives, namespace):
    result = run_module(
        "containerd_image",
        {
            "archive": str(archives["docker-save"]),
            "address": "/run/no-such/containerd.sock",
            "namespace": namespace,
        },
    )
    assert result.get("failed") is True, result
    assert "Is containerd up, and is /run/no-such/containerd.sock its socket?" in result["msg"]


def images_playbook(extra):
    """One run of playbooks/data_miner/images.yml with ``extra`` vars; its stdout."""
    from .test_checkpoint_playbooks import PLAYBOOK_BIN  # noqa: PLC0415 - the venv's ansible-playbook

    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    argv = [PLAYBOOK_BIN, "playbooks/data_miner/images.yml", "-e", json.dumps(extra)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def test_images_playbook_imports_once_per_node(runtimes, archives, namespace, tmp_path):
    """playbooks/data_miner/images.yml on this machine (a node with the test bed's containerd 1.6):
    the archive is copied and imported; the second run finds the same image and skips it."""
    extra = {
        "data_miner_image_hosts": "localhost",
        "data_miner_image_archive": str(archives["docker-save"]),
        "data_miner_image_name": "data-miner:latest",
        "data_miner_containerd_address": runtimes["1.6"].address,
        "data_miner_containerd_namespace": namespace,
        "data_miner_ctr_command": ["ctr"],
        "data_miner_image_dir": str(tmp_path / "images"),
        "ansible_become": False,
    }

    def play():
        return images_playbook(extra)

    first = play()
    assert "localhost: docker.io/library/data-miner:latest imported" in first
    assert (tmp_path / "images" / "docker-save.tar").stat().st_mode & 0o777 == 0o600
    again = play()
    assert "localhost: docker.io/library/data-miner:latest is there already" in again
    assert "changed=0" in again


def test_images_playbook_builds_the_image_then_imports_it(runtimes, namespace, tmp_path):
    """images.yml with a build context: strata.ops.image_build builds and saves the image on the
    controller (this machine's Docker), then it is imported; the second run builds from the cache,
    rewrites no archive and imports nothing."""
    base = lib_sh_value("cri_image").removeprefix("docker.io/library/")
    context = tmp_path / "src"
    context.mkdir()
    name = f"strata-it-dm-{uuid.uuid4().hex[:8]}:latest"
    (context / "Dockerfile").write_text(f"FROM {base}\nLABEL org.strata.test={name}\n")
    extra = {
        "data_miner_image_hosts": "localhost",
        "data_miner_image_build_context": str(context),
        "data_miner_image_archive": str(tmp_path / "data-miner.tar"),
        "data_miner_build_lock": str(tmp_path / "build.lock"),
        "data_miner_image_name": name,
        "data_miner_containerd_address": runtimes["1.6"].address,
        "data_miner_containerd_namespace": namespace,
        "data_miner_ctr_command": ["ctr"],
        "data_miner_image_dir": str(tmp_path / "images"),
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
    }

    def play():
        return images_playbook(extra)

    try:
        first = play()
        assert f"{name} (sha256:" in first and "built anew" in first, first[-3000:]
        assert f"localhost: docker.io/library/{name} imported" in first
        again = play()
        assert "unchanged;" in again and "already holds it" in again, again[-3000:]
        assert f"localhost: docker.io/library/{name} is there already" in again
        assert "changed=0" in again
    finally:
        subprocess.run(["docker", "rmi", "--force", name], capture_output=True, check=False)
