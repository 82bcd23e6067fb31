"""playbooks/checkpoint.yml, checkpoints.yml and restore.yml (role strata.ops.pod_checkpoint)
against the real Docker engine and CRIU 4.x, on this machine (localhost, no lab host: the lab's
workload runs on kwok's simulated nodes, which have no processes to dump).

A "pod" is a container counting in memory with the labels the kubelet sets (found among Docker
containers by namespace/pod/container) and a host directory at /data. It is checkpointed twice
with keep=1 (the retention leaves the second), listed, restored with --check (nothing is
created, the checkpoint is named), restored into a new container whose counter goes on from the
dumped value, and a restore of a checkpoint that is not listed fails with the list. Needs what
test_pod_checkpoint.py needs (its fixtures are reused); skipped without it unless CI=true.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from . import test_pod_checkpoint as pc

REPO = pc.REPO
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
NAMESPACE = "strata-test"
NOT_LISTED = "nosuch-20250101T000000.000Z"

# The checkpoint test bed's fixtures, shared with test_pod_checkpoint.py.
testbed = pc.testbed
experimental = pc.experimental
names = pc.names
cri = pc.cri

pytestmark = pytest.mark.needs("criu")


def playbook(name, extra, check=False, path_prefix=None, environ=None):
    """Run playbooks/<name>.yml on localhost (``path_prefix`` before PATH, ``environ`` added to its
    environment); (rc, results by task name, the failed result)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        **(environ or {}),
    )
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env["PATH"]
    extra = dict(extra, pod_checkpoint_hosts="localhost", ansible_become=False)
    argv = [PLAYBOOK_BIN, f"playbooks/{name}.yml", "-e", json.dumps(extra)] + (["--check"] if check else [])
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    try:
        tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no result from ansible-playbook: {proc.stdout}\n{proc.stderr}") from None
    results = {}
    for task in tasks:
        result = task["hosts"].get("localhost")
        name = task["task"]["name"].split(" : ", 1)[-1]  # "strata.ops.pod_checkpoint : NAME"
        if result is not None and not (name in results and result.get("skipped")):
            results[name] = result
    failed = [r for r in results.values() if r.get("failed")]
    return proc.returncode, results, (failed[0] if failed else None)


def summary(results):
    return results["Summary"]["msg"]


@pytest.fixture
def pod(testbed, tmp_path, names):
    """A running container of pod strata-test/<random>, container counter, counting in memory."""
    name = pc.unique()
    data = tmp_path / "hostdata"
    data.mkdir()
    (data / "marker").write_text("host side\n")
    names.append(name)
    labels = [arg for k, v in pc.kubelet_labels(name, "counter").items() for arg in ("--label", f"{k}={v}")]
    volume = ["-v", f"{data}:/data"]
    pc.docker("run", "-d", "--name", name, *labels, *volume, pc.IMAGE, "python3", "-u", "-c", pc.COUNTER)
    pc.wait_count(name, 3)
    return {"container": name, "pod": name, "dump_name": f"{NAMESPACE}-{name}-counter"}


def test_checkpoint_retention_list_and_restore(pod, tmp_path, names, experimental):
    images = str(tmp_path / "images")
    settings = {
        "pod_checkpoint_namespace": NAMESPACE,
        "pod_checkpoint_pod": pod["pod"],
        "pod_checkpoint_container": "counter",
        "pod_checkpoint_runtime": "docker",
        "pod_checkpoint_images_dir": images,
        "pod_checkpoint_keep": 1,
        "pod_checkpoint_criu_path": pc.CRIU,
        "pod_checkpoint_crit_path": pc.CRIT,
    }
    kept, before, after = checkpoint_twice_keep_one(pod, settings)
    list_and_plan(pod, settings, kept)
    restore_and_refuse(settings, names, kept, (before, after))


def checkpoint_twice_keep_one(pod, settings):
    """Two checkpoints with keep=1: the second stays; the counter's values around it."""
    images = settings["pod_checkpoint_images_dir"]
    rc, first, failed = playbook("checkpoint", settings)
    assert rc == 0, failed
    first_dir = first[f"Checkpoint pod {NAMESPACE}/{pod['pod']} container counter"]["checkpoint_dir"]
    assert os.path.basename(first_dir).startswith(pod["dump_name"] + "-")
    assert f"Checkpointed pod {NAMESPACE}/{pod['pod']} container counter on localhost" in summary(first)
    assert "left running" in summary(first)

    before = pc.last_count(pod["container"])
    rc, second, failed = playbook("checkpoint", settings)
    after = pc.last_count(pod["container"])
    assert rc == 0, failed
    dump = second[f"Checkpoint pod {NAMESPACE}/{pod['pod']} container counter"]
    kept = dump["checkpoint_dir"]
    assert dump["pruned"] == [first_dir]  # keep=1
    assert sorted(os.listdir(images)) == [os.path.basename(kept)]
    assert f"keep=1 removed {os.path.basename(first_dir)}" in summary(second)
    assert f"1 checkpoint(s) of {pod['dump_name']} in {images}, 1 usable" in summary(second)
    pc.wait_count(pod["container"], after + 3)  # left running
    return kept, before, after


def list_and_plan(pod, settings, kept):
    """--check of a third checkpoint changes nothing; the list shows the one kept."""
    images = settings["pod_checkpoint_images_dir"]
    # --check of a third: the command, what keep=1 would remove, nothing written
    rc, planned, failed = playbook("checkpoint", settings, check=True)
    assert rc == 0, failed
    assert summary(planned).startswith(f"Check mode: would checkpoint pod {NAMESPACE}/{pod['pod']}")
    assert f"keep=1 would remove {os.path.basename(kept)}" in summary(planned)
    assert "--leave-running" in summary(planned)
    assert sorted(os.listdir(images)) == [os.path.basename(kept)]

    rc, listed, failed = playbook("checkpoints", settings)
    assert rc == 0, failed
    lines = summary(listed)
    assert lines[0].startswith(f"1 checkpoint(s) of {pod['dump_name']} in {images}, 1 usable")
    assert lines[1].startswith(os.path.basename(kept) + ": ")
    assert lines[1].endswith("left running, restorable"), lines[1]
    info = listed[f"List the checkpoints in {images}"]["checkpoints"]
    assert [c["directory"] for c in info] == [kept]
    assert info[0]["target"]["pod"] == {"name": pod["pod"], "namespace": NAMESPACE, "container": "counter"}


def restore_and_refuse(settings, names, kept, counted):
    """--check restore names the checkpoint; the restore goes on counting from the dumped value
    (between the counts ``counted`` read before and after the dump); a wrong one is refused."""
    before, after = counted
    new = pc.unique()
    names.append(new)
    restore = dict(settings, pod_checkpoint_new_container=new)
    rc, planned, failed = playbook("restore", restore, check=True)
    assert rc == 0, failed
    assert summary(planned).startswith(f"Check mode: would restore {os.path.basename(kept)} (")
    assert f"into the new container {new} on localhost" in summary(planned)
    assert pc.docker("inspect", new, check=False).returncode != 0  # nothing created

    rc, restored, failed = playbook("restore", restore)
    assert rc == 0, failed
    assert summary(restored).startswith(f"Restored {os.path.basename(kept)} (")
    inspect = json.loads(pc.docker("inspect", new).stdout)[0]
    assert inspect["State"]["Running"] is True
    pc.wait_count(new, 1)
    resumed = int(pc.docker("logs", new).stdout.split()[0])
    assert before < resumed <= after + 2, (before, resumed, after)  # goes on from the dumped value
    pc.wait_count(new, resumed + 3)
    assert pc.docker("exec", new, "cat", "/data/marker").stdout == "host side\n"

    # a checkpoint that is not listed: refused with the list, nothing created
    other = pc.unique()
    names.append(other)
    wrong = dict(restore, pod_checkpoint_new_container=other, pod_checkpoint_checkpoint=NOT_LISTED)
    rc, _results, failed = playbook("restore", wrong)
    assert rc != 0
    assert f"Checkpoint {NOT_LISTED} is not among the checkpoints of " in failed["msg"]
    assert os.path.basename(kept) in failed["msg"]
    assert "Nothing was restored." in failed["msg"]
    assert pc.docker("inspect", other, check=False).returncode != 0

    # a listed directory without a manifest (a dump that did not finish): refused with the reason
    unfinished = os.path.join(
        os.path.dirname(kept), os.path.basename(kept).rsplit("-", 1)[0] + "-20200101T000000.000Z"
    )
    os.mkdir(unfinished)
    rc, _results, failed = playbook("restore", dict(wrong, pod_checkpoint_checkpoint=unfinished))
    assert rc != 0
    assert f"Checkpoint {os.path.basename(unfinished)} cannot be restored: no manifest.json" in failed["msg"]
    assert pc.docker("inspect", other, check=False).returncode != 0


def test_checkpoint_list_and_restore_on_containerd(cri, tmp_path):
    """pod_checkpoint_method=containerd, the MicroK8s and k3s path, on containerd 1.6 and 1.7: two
    checkpoints with keep=1 (the summary says how long the container was paused), the list, restore
    --check (nothing created), the restore into a new container whose counter goes on from the dump,
    and a second restore that finds it running."""
    pod = pc.unique()
    images = tmp_path / "images"
    dump_name = f"{NAMESPACE}-{pod}-counter"
    settings = {
        "pod_checkpoint_method": "containerd",
        "pod_checkpoint_namespace": NAMESPACE,
        "pod_checkpoint_pod": pod,
        "pod_checkpoint_container": "counter",
        "pod_checkpoint_runtime": "cri",
        "pod_checkpoint_cri_endpoint": cri.endpoint,
        "pod_checkpoint_ctr_path": cri.ctr,
        "pod_checkpoint_images_dir": str(images),
        "pod_checkpoint_keep": 1,
    }
    new = pc.unique()
    with pc.counter_in_pod(tmp_path, pod, cri) as made:
        log = pathlib.Path(made["log"])
        pc.wait_cri_count(log, 5)
        for _round in range(2):
            before_dump = pc.cri_count(log)  # the restored counter holds at least this
            rc, done, failed = playbook("checkpoint", settings, path_prefix=pc.TESTBED_BIN)
            assert rc == 0, failed
            dumped = done[f"Checkpoint pod {NAMESPACE}/{pod} container counter"]
            assert dumped["frozen_s"] > 0, dumped
            assert "by containerd, paused " in summary(done), summary(done)
            assert "left running" in summary(done), summary(done)
        assert f"keep=1 removed {dump_name}-" in summary(done), summary(done)
        assert sorted(os.listdir(images)) == [os.path.basename(dumped["checkpoint_dir"])]

        rc, listed, failed = playbook("checkpoints", settings)
        assert rc == 0, failed
        (entry,) = listed[f"List the checkpoints in {images}"]["checkpoints"]
        assert (entry["method"], entry["restorable"]) == ("containerd", True), entry

        restore = dict(settings, pod_checkpoint_new_container=new)
        try:
            rc, planned, failed = playbook("restore", restore, check=True, path_prefix=pc.TESTBED_BIN)
            assert rc == 0, failed["msg"]
            assert summary(planned).startswith(f"Check mode: would restore {entry['id']} ("), summary(planned)
            images = os.path.join(dumped["checkpoint_dir"], "criu")
            assert f"containerd Tasks.Create {new} criu_image_path={images}" in summary(planned)
            assert pc.ctr_cli(cri, "containers", "info", new, check=False).returncode != 0  # nothing made

            rc, restored, failed = playbook("restore", restore, path_prefix=pc.TESTBED_BIN)
            assert rc == 0, failed
            pid = restored[f"Restore the chosen checkpoint into {new}"]["restored"]["pid"]
            assert summary(restored).startswith(f"Restored {entry['id']} (")
            assert f"into the new container {new} on localhost (host pid {pid})" in summary(restored)
            first = pc.counted_in(pid)
            # the second dump's memory, not a fresh 1 (no bound from after the playbook: a loaded
            # machine's play runs on for seconds after the dump while the pod counts on)
            assert first >= before_dump, (first, before_dump)
            pc.wait_until_counted(lambda: pc.counted_in(pid), first + 3, f"restored container {new}")
            rc, again, failed = playbook("restore", restore, path_prefix=pc.TESTBED_BIN)
            assert rc == 0, failed
            assert "already runs restored from" in summary(again), summary(again)
        finally:
            pc.remove_restored(cri, new)


def test_checkpoint_can_stop_the_container(testbed, tmp_path, names):
    name = pc.unique()
    names.append(name)
    pc.docker("run", "-d", "--name", name, pc.IMAGE, "python3", "-u", "-c", pc.COUNTER)
    pc.wait_count(name, 2)
    settings = {
        "pod_checkpoint_docker_container": name,
        "pod_checkpoint_images_dir": str(tmp_path / "images"),
        "pod_checkpoint_leave_running": False,
        "pod_checkpoint_criu_path": pc.CRIU,
        "pod_checkpoint_crit_path": pc.CRIT,
    }
    rc, results, failed = playbook("checkpoint", settings)
    assert rc == 0, failed
    assert "--leave-running" not in results[f"Checkpoint Docker container {name}"]["command"]
    assert f"Checkpointed Docker container {name} on localhost" in summary(results)
    assert ", stopped;" in summary(results)
    state = json.loads(pc.docker("inspect", name).stdout)[0]["State"]
    assert state["Running"] is False


def test_restore_needs_a_new_container_name(testbed, tmp_path):
    rc, _results, failed = playbook(
        "restore", {"pod_checkpoint_name": "nothing", "pod_checkpoint_images_dir": str(tmp_path / "images")}
    )
    assert rc != 0
    assert "Restore needs pod_checkpoint_new_container" in failed["msg"]
