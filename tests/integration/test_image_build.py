"""strata.ops.image_build against the test bed's real Docker engine.

There is no registry, so the Dockerfiles start FROM the CRI workload image that the test bed makes
with ``docker import`` (tests/testbed/cri/start: a static binary, no shell, so no RUN). Each test
builds an image of its own name and removes it afterwards; the lock lives in tmp_path, never at the
operators' /tmp path. Owners of stale and live locks are real processes.
"""

import json
import os
import subprocess
import uuid

import pytest
from testbed_paths import lib_sh_value  # tests/testbed, on sys.path by conftest

from ansible_collections.strata.ops.plugins.module_utils import build_lock
from ansible_collections.strata.ops.plugins.module_utils.image_import import archive_image

from .conftest import adhoc_result, assert_clean_failure, run_module, skip_or_fail

pytestmark = pytest.mark.needs("docker")


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def image_id(ref):
    proc = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def base_image():
    if docker("version", "--format", "{{.Server.Version}}", check=False).returncode != 0:
        skip_or_fail("docker does not answer: tests/testbed/up starts dockerd")
    image = lib_sh_value("cri_image").removeprefix("docker.io/library/")
    if image_id(image) is None:
        skip_or_fail(f"docker has no {image}: tests/testbed/cri/start makes it")
    return image


@pytest.fixture
def job(base_image, tmp_path):
    """A context with a Dockerfile FROM the test bed's image, and the module arguments for it."""
    context = tmp_path / "src"
    context.mkdir()
    (context / "payload.txt").write_text("frames\n")
    name = f"strata-it-build-{uuid.uuid4().hex[:8]}"
    dockerfile(context, base_image, "1")
    args = {
        "name": name,
        "context": str(context),
        "archive": str(tmp_path / "images" / "data-miner.tar"),
        "lock_path": str(tmp_path / "data-miner_build.lock"),
        "lock_timeout": 0,
    }
    (tmp_path / "images").mkdir()
    yield {"args": args, "context": context, "base": base_image, "tmp": tmp_path}
    docker("rmi", "--force", f"{name}:latest", check=False)


def dockerfile(context, base, revision):
    # The context's own name in a label: tests running at once never build the same image ID, whose
    # `docker rmi --force` at one test's end would drop the other's build cache.
    (context / "Dockerfile").write_text(
        f"FROM {base}\nLABEL org.strata.revision={revision} org.strata.context={context}\n"
        "COPY payload.txt /payload.txt\n"
    )


def archived(path):
    """(config digest, RepoTags) of a docker save archive, read as containerd_image reads it."""
    return archive_image(path)


def snapshot(path):
    info = os.stat(path)
    with open(path, "rb") as handle:
        return handle.read(), info.st_mtime_ns, info.st_ino, info.st_mode & 0o777


def held_lock_of(proc, command):
    """A lock record naming ``proc`` (read while it runs)."""
    return build_lock.owner_record(proc.pid, command=command)


def test_build_and_save_then_nothing_to_do_then_a_new_revision(job):
    args, name = job["args"], job["args"]["name"]
    first = run_module("image_build", args)
    assert first.get("failed") is not True, first
    assert first["changed"] is True and first["archive_changed"] is True
    assert first["before_id"] is None and first["image"] == f"{name}:latest"
    assert first["image_id"] == image_id(name) and first["image_id"].startswith("sha256:")
    assert archived(args["archive"]) == (first["image_id"], [f"{name}:latest"])
    assert os.stat(args["archive"]).st_mode & 0o777 == 0o600
    assert first["lock"] == {"path": args["lock_path"], "taken_over_from": None}
    assert not os.path.exists(args["lock_path"])  # released
    assert sorted(os.listdir(job["tmp"] / "images")) == ["data-miner.tar"]  # no temporary left
    before = snapshot(args["archive"])

    again = run_module("image_build", args)
    assert again.get("failed") is not True, again
    assert again["changed"] is False and again["archive_changed"] is False, again
    assert again["image_id"] == again["before_id"] == again["archive_before_id"] == first["image_id"]
    assert snapshot(args["archive"]) == before  # same bytes, mtime and inode: not rewritten
    assert [c.split()[1] for c in again["commands"]] == ["build"]

    dockerfile(job["context"], job["base"], "2")
    changed = run_module("image_build", args)
    assert changed.get("failed") is not True, changed
    assert changed["changed"] is True and changed["archive_changed"] is True
    assert changed["before_id"] == first["image_id"] != changed["image_id"] == image_id(name)
    assert archived(args["archive"])[0] == changed["image_id"]
    assert snapshot(args["archive"])[2] != before[2]  # a new file renamed over the old one


def test_check_mode_changes_nothing(job):
    args = job["args"]
    planned = run_module("image_build", args, check_mode=True)
    assert planned.get("failed") is not True, planned
    assert planned["changed"] is True and planned["archive_changed"] is True
    assert planned["before_id"] is None and planned["lock"]["state"] == "free"
    assert planned["commands"][0].split()[1:3] == ["build", "--force-rm"]
    assert "would build" in planned["msg"]
    assert image_id(args["name"]) is None
    assert os.listdir(job["tmp"] / "images") == [] and not os.path.exists(args["lock_path"])

    built = run_module("image_build", args)
    assert built["changed"] is True, built
    converged = run_module("image_build", args, check_mode=True)
    assert converged["changed"] is False and converged["archive_changed"] is False, converged
    assert "keep the archive" in converged["msg"]


def test_a_stale_lock_of_a_killed_build_is_taken_over_with_a_warning(job):
    args = job["args"]
    owner = subprocess.Popen(["sleep", "30"])
    record = held_lock_of(owner, "provision.py build data-miner")
    owner.kill()
    owner.wait()
    with open(args["lock_path"], "w") as handle:
        json.dump(record, handle)
    result = adhoc_result("image_build", args)  # through ansible: the warning reaches the operator
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["lock"]["taken_over_from"] == record
    assert any(
        f"from a dead owner: pid {owner.pid} (provision.py build data-miner)" in w and "is gone" in w
        for w in result.get("warnings", [])
    ), result.get("warnings")
    assert not os.path.exists(args["lock_path"])


def test_a_live_owner_makes_it_fail_after_the_timeout_and_build_nothing(job):
    args = dict(job["args"], lock_timeout=1)
    owner = subprocess.Popen(["sleep", "30"])
    try:
        with open(args["lock_path"], "w") as handle:
            json.dump(held_lock_of(owner, "provision.py build data-miner"), handle)
        with open(args["lock_path"], "rb") as handle:
            before = handle.read()
        result = run_module("image_build", args)
        assert_clean_failure(result)
        assert result["error"] == "lock_held"
        assert f"held by pid {owner.pid} (provision.py build data-miner)" in result["msg"]
        assert "waited 1 s" in result["msg"] and f"kill {owner.pid}" in result["msg"]
        assert result["lock"]["held_by"]["pid"] == owner.pid
        with open(args["lock_path"], "rb") as handle:
            assert handle.read() == before
    finally:
        owner.kill()
        owner.wait()
    assert image_id(args["name"]) is None and os.listdir(job["tmp"] / "images") == []


def test_a_failing_build_names_the_step_and_leaves_the_archive(job):
    args = job["args"]
    assert run_module("image_build", args)["changed"] is True
    before = snapshot(args["archive"])
    with open(job["context"] / "Dockerfile", "a") as handle:
        handle.write("COPY no-such-file /x\n")
    result = run_module("image_build", args)
    assert_clean_failure(result)
    assert result["error"] == "build_failed" and "no-such-file" in result["output_tail"]
    assert "docker build of" in result["msg"] and "Fix the Dockerfile or the context" in result["msg"]
    assert snapshot(args["archive"]) == before and not os.path.exists(args["lock_path"])


def test_take_a_local_image_without_building(job):
    args = {k: v for k, v in job["args"].items() if k != "context"}
    result = run_module("image_build", dict(args, name=job["base"], build=False))
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["image_id"] == result["before_id"] == image_id(job["base"])
    assert archived(args["archive"]) == (result["image_id"], [job["base"]])
    assert [c.split()[1] for c in result["commands"]] == ["save"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"context": "{tmp}/no-such-dir"}, ["the build context {tmp}/no-such-dir does not exist"]),
        (
            {"dockerfile": "docker/Dockerfile.gpu"},
            ["the Dockerfile {tmp}/src/docker/Dockerfile.gpu was not found"],
        ),
        (
            {"docker_host": "unix:///run/no-such/docker.sock"},
            ["Docker daemon at unix:///run/no-such/docker.sock"],
        ),
    ],
    ids=["context", "dockerfile", "daemon"],
)
def test_bad_inputs_say_what_is_wrong_and_take_no_lock(job, change, says):
    args = dict(job["args"], **{k: v.format(tmp=job["tmp"]) for k, v in change.items()})
    result = run_module("image_build", args)
    assert_clean_failure(result)
    for text in says:
        assert text.format(tmp=job["tmp"]) in result["msg"], result["msg"]
    assert image_id(args["name"]) is None and not os.path.exists(args["lock_path"])
