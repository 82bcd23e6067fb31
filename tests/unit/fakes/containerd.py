"""What containerd does around a restore, for the unit tests of leftovers.py and its callers: a
/proc with a containerd process (its root a directory of the test), the copy of the checkpoint its
tasks service extracts into its temporary directory and keeps, and a checkpoint image exported
as ``ctr images export --skip-manifest-json`` writes it (an OCI archive: index.json -> the image
index -> the criu.tar layer among containerd's checkpoint blobs)."""

import hashlib
import io
import itertools
import json
import tarfile

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import leftovers

OPTIONS_TYPE = "application/vnd.containerd.container.checkpoint.options.v1+proto"
CRIU_FILES = {"inventory.img": b"inventory", "pages-1.img": b"\0" * 8192, "pstree.img": b"tree"}
_suffixes = itertools.count(1_000_000)


def containerd_proc(tmp_path, environ=b"PATH=/usr/bin\0", *, criu=False, pid="4100", address=None):
    """(proc dir, the temporary directory containerd sees as /tmp, as a path of the test): a
    containerd process ``pid`` whose root is a directory of the test, with an executable
    /usr/bin/criu there when ``criu`` (what it answers is the test's FakeRun's), listening on the
    unix socket ``address`` when given (/proc/net/unix and a socket fd)."""
    root = tmp_path / ("host" if pid == "4100" else f"host-{pid}")
    (root / "tmp").mkdir(parents=True)
    if criu:
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / "criu").write_text("#!/bin/sh\n")
        (root / "usr" / "bin" / "criu").chmod(0o755)
    proc = tmp_path / "proc"
    process = proc / pid
    process.mkdir(parents=True)
    (process / "comm").write_text("containerd\n")
    (process / "environ").write_bytes(environ)
    (process / "root").symlink_to(root)
    if address:
        inode = str(int(pid) * 10)
        unix = proc / "net" / "unix"
        unix.parent.mkdir(exist_ok=True)
        if not unix.exists():
            unix.write_text("Num       RefCount Protocol Flags    Type St Inode Path\n")
        with unix.open("a") as handle:
            handle.write(f"0000000000000000: 00000002 00000000 00010000 0001 01 {inode} {address}\n")
        (process / "fd").mkdir()
        (process / "fd" / "7").symlink_to(f"socket:[{inode}]")
    return str(proc), root / "tmp"


def leave_copy(temp_dir, files=None):
    """containerd's os.MkdirTemp(dir, "ctrd-checkpoint") with a checkpoint's files in it."""
    path = temp_dir / f"{leftovers.PREFIX}{next(_suffixes)}"
    path.mkdir()
    for name, data in (CRIU_FILES if files is None else files).items():
        (path / name).write_bytes(data)
    return path


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _blob(tar, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _add(tar, "blobs/" + digest.replace(":", "/"), data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def checkpoint_archive(path, files=None, process=True):
    """Write a checkpoint image archive holding ``files`` (CRIU_FILES) at ``path``; without
    ``process`` it has no CRIU layer (what containerd makes when the spec blob exists: containerd.py)."""
    criu_tar = io.BytesIO()
    with tarfile.open(fileobj=criu_tar, mode="w") as inner:
        for name, data in (CRIU_FILES if files is None else files).items():
            _add(inner, name, data)
    with tarfile.open(path, "w") as outer:
        manifests = [_blob(outer, b"\n\x08options", OPTIONS_TYPE)]
        if process:
            manifests.append(_blob(outer, criu_tar.getvalue(), leftovers.CRIU_TAR))
        image = {"schemaVersion": 2, "manifests": manifests}
        image_desc = _blob(outer, json.dumps(image).encode(), "application/vnd.oci.image.index.v1+json")
        _add(outer, "index.json", json.dumps({"schemaVersion": 2, "manifests": [image_desc]}).encode())
    return str(path)


class FakeCtr:
    """ctr answering like containerd 1.6's: ``existing`` containers, ``images`` in the store,
    ``fail`` maps a verb pair (e.g. ("containers", "restore")) to its stderr; ``release``: "1.6"
    (``images import`` has no --local), else 1.7 or later. A checkpoint of a
    container while the image of an earlier one of it is in the store holds no process, as
    containerd's does (containerd.py). ``image_labels``: {ref: {key: value}}, which ``images ls``
    filters on (labels."KEY"==VALUE) and ``images label`` sets."""

    def __init__(
        self, existing=(), images=(), fail=None, statuses=("RUNNING",), copy_into=None, *, release="1.6"
    ):
        self.existing = set(existing)
        self.release = release  # ctr 1.7 and 2.x know images import --local
        self.copy_into = copy_into  # containerd's temporary directory: a restore leaves a copy there
        self.images = set(images)
        self.fail = fail or {}
        self.statuses = list(statuses)  # what each tasks ls shows; the last one stays
        self.labels = {}
        self.image_labels = {}
        self.checkpoints = {}  # ref: (container, holds the process)

    def __call__(self, argv, **_kwargs):
        args = argv[5:]  # after ctr --address A --namespace N
        verb = tuple(args[:2])
        if verb == ("containers", "restore"):  # containerd makes the container before its task restores
            self.existing.add(args[-2])
            if self.copy_into:  # and extracts the checkpoint before the runtime restores from it
                leave_copy(self.copy_into)
        if verb == ("images", "import") and "--help" in args:
            return 0, self._import_help(), ""
        if verb in self.fail:
            return 1, "", self.fail[verb]
        if verb == ("containers", "info"):
            if args[2] not in self.existing:
                return 1, "", f'container "{args[2]}": not found'
            return 0, json.dumps({"ID": args[2], "Labels": self.labels}), ""
        if verb in (("images", "ls"), ("images", "label")):
            return 0, self._image_labels(args), ""
        if verb == ("tasks", "ls"):
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            rows = [f"{name} 4242 {status}" for name in sorted(self.existing)]
            return 0, "\n".join(["TASK PID STATUS", *rows]), ""
        if verb == ("containers", "rm"):
            self.existing.discard(args[2])
        if verb == ("containers", "checkpoint"):  # ctr containers checkpoint --task --rw ID REF
            container, ref = args[-2], args[-1]
            spec_held = any(c == container and r in self.images for r, (c, _p) in self.checkpoints.items())
            self.checkpoints[ref] = (container, not spec_held)
            self.images.add(ref)
        if verb == ("images", "rm"):
            self.images.difference_update(a for a in args[2:] if not a.startswith("--"))
        if verb == ("images", "export"):  # ctr images export --skip-manifest-json ARCHIVE REF
            checkpoint_archive(args[-2], process=self.checkpoints.get(args[-1], (None, True))[1])
        return 0, "", ""

    def _import_help(self):
        local = "   --local   Run import locally rather than through transfer API\n"
        return "OPTIONS:\n   --no-unpack   Skip unpacking\n" + (local if self.release != "1.6" else "")

    def _image_labels(self, args):
        """images label REF KEY=VALUE sets a label; images ls -q [labels."KEY"==VALUE] filters on them."""
        if args[1] == "label":
            key, value = args[3].split("=", 1)
            self.image_labels.setdefault(args[2], {})[key] = value
            return ""
        wanted = [a.removeprefix("labels.").split("==") for a in args[2:] if a != "-q"]
        labels = self.image_labels
        return "\n".join(
            ref
            for ref in sorted(self.images)
            if all(labels.get(ref, {}).get(k.strip('"')) == v for k, v in wanted)
        )


# A CUDA container on a GPU node, for the GPU paths of method=containerd and method=kubelet.
CONTAINER_ID = "c0ffee"


def crictl(argv, **_kwargs):
    """crictl ps / inspect of one running container, as cri-tools 1.34 prints them."""
    if "ps" in argv:
        container = {"id": CONTAINER_ID, "metadata": {"name": "trainer"}, "image": {"image": "img"}}
        return 0, json.dumps({"containers": [container]}), ""
    return 0, json.dumps({"info": {"pid": 4242}}), ""


def cuda_proc(proc_dir, pid=4242):
    """A /proc entry of a process that maps libcuda (what gpu.uses_cuda looks for)."""
    task = proc_dir / str(pid) / "task" / str(pid)
    task.mkdir(parents=True)
    (task / "children").write_text("")
    (proc_dir / str(pid) / "maps").write_text(
        "7f0000000000-7f0000001000 r-xp 0 08:01 1 /usr/lib/libcuda.so.1\n"
    )
