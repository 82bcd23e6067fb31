"""A Docker Engine that answers the calls containers.DockerAPI makes, the way dockerd does:
inspect of an unknown name is a 404 (TargetNotFound), create makes the container's directory
under DockerRootDir, start with a checkpoint needs that checkpoint copied under the container's
checkpoints/ directory and an experimental daemon; its containerd extracts the checkpoint into
``containerd_tmp`` (when given) and keeps it there, as containerd does (leftovers.py)."""

import copy
import itertools
import os

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr

from .containerd import leave_copy


class FakeDockerAPI:
    def __init__(
        self,
        root,
        experimental=True,
        containers=None,
        start_error=None,
        restored_pid=4242,
        *,
        containerd_tmp=None,
    ):
        self.root = str(root)
        self.experimental = experimental
        self.containers = dict(containers or {})
        self.start_error = start_error
        self.restored_pid = restored_pid
        self.containerd_tmp = containerd_tmp
        self.checkpoint_inodes = {}  # the inodes of the files of the checkpoint each start read
        self.calls = []
        self._ids = itertools.count(1)

    def __call__(self, _socket_path):
        """Stands in for the DockerAPI class: Restorer(docker=fake) builds clients from a socket path."""
        return self

    def info(self):
        self.calls.append(("info",))
        return {"DockerRootDir": self.root, "ExperimentalBuild": self.experimental}

    def inspect(self, ref):
        self.calls.append(("inspect", ref))
        return self._find(ref)

    def _find(self, ref):
        doc = self.containers.get(ref) or next((c for c in self.containers.values() if c["Id"] == ref), None)
        if doc is None:
            raise ctr.TargetNotFound(
                f"Docker API GET /containers/{ref}/json: HTTP 404: No such container: {ref}"
            )
        return doc

    def create(self, name, config):
        self.calls.append(("create", name, copy.deepcopy(config)))  # dockerd keeps what it got
        cid = f"{next(self._ids):064x}"
        os.makedirs(os.path.join(self.root, "containers", cid))
        self.containers[name] = {
            "Id": cid,
            "Name": "/" + name,
            "Config": {"Labels": dict(config.get("Labels") or {}), "Image": config.get("Image")},
            "HostConfig": config.get("HostConfig") or {},
            "State": {"Status": "created", "Running": False, "Pid": 0},
        }
        return {"Id": cid}

    def start(self, ref, checkpoint=None):
        self.calls.append(("start", ref, checkpoint))
        doc = self._find(ref)
        if checkpoint:
            if not self.experimental:
                raise ctr.ContainerError("checkpoint is only supported in experimental mode")
            images = os.path.join(self.root, "containers", doc["Id"], "checkpoints", checkpoint)
            if not os.path.isdir(images):
                raise ctr.ContainerError(f"checkpoint {checkpoint} does not exist for container {doc['Id']}")
            files = {name: os.path.join(images, name) for name in os.listdir(images)}
            self.checkpoint_inodes = {name: os.stat(path).st_ino for name, path in files.items()}
            if self.containerd_tmp:
                contents = {}
                for name, path in files.items():
                    with open(path, "rb") as handle:
                        contents[name] = handle.read()
                leave_copy(self.containerd_tmp, contents)
        if self.start_error:
            raise ctr.ContainerError(self.start_error)
        doc["State"] = {"Status": "running", "Running": True, "Pid": self.restored_pid}

    def remove(self, ref, force=True):
        self.calls.append(("remove", ref, force))
        doc = self._find(ref)
        self.containers = dict((k, v) for k, v in self.containers.items() if v is not doc)

    def verbs(self):
        return [call[0] for call in self.calls]
