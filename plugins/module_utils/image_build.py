# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.image_build: docker build under the owner-recording build lock (build_lock.py), then
docker save into an archive that is rewritten only when its image ID differs."""

import os
import re
import shlex
import tempfile

from ansible_collections.strata.ops.plugins.module_utils.build_lock import BuildLock
from ansible_collections.strata.ops.plugins.module_utils.common import (
    InvalidArgument,
    StrataError,
)
from ansible_collections.strata.ops.plugins.module_utils.containers import RuntimeUnavailable
from ansible_collections.strata.ops.plugins.module_utils.image_import import (
    ImageArchiveError,
    archive_image,
    normalized,
)

# distribution/reference: [domain[:port]/]path[:tag], lowercase path components; no digest for a build
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REFERENCE = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?$"
)
TAIL_LINES = 25


class BuildFailed(StrataError):
    error_kind = "build_failed"


class Docker:
    """The docker CLI, optionally against ``-H host``; every command run is kept."""

    def __init__(self, cli, host, run_command):
        self.argv = [cli, *(["-H", host] if host else [])]
        self.host = host
        self.run_command = run_command
        self.commands = []

    def line(self, *args):
        return " ".join(shlex.quote(a) for a in [*self.argv, *args])

    def run(self, *args, record=True):
        if record:
            self.commands.append(self.line(*args))
        return self.run_command([*self.argv, *args])

    def reachable(self):
        rc, out, err = self.run("version", "--format", "{{.Server.Version}}", record=False)
        if rc != 0 or not out.strip():
            where = f" at {self.host}" if self.host else ""
            reason = ((err or out).strip().splitlines()[-1:] or [f"rc={rc}"])[0].rstrip(".?")
            raise RuntimeUnavailable(
                f"cannot reach the Docker daemon{where} ({reason}): start dockerd (systemctl start "
                "docker), let this user use its socket (group docker, or become: true), or set docker_host"
            )

    def image_id(self, ref):
        """The image ID of ``ref`` in the daemon, or None when it holds no such image."""
        rc, out, err = self.run("image", "inspect", "--format", "{{.Id}}", ref, record=False)
        if rc == 0:
            return out.strip()
        if "no such image" in (err + out).lower():
            return None
        raise RuntimeUnavailable(f"docker image inspect {ref} failed (rc={rc}): {(err or out).strip()}")


def with_tag(name):
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def archive_state(path, image):
    """(image ID the archive holds or None, whether it names ``image``, a warning or None)."""
    if not os.path.exists(path):
        return None, False, None
    try:
        digest, tags = archive_image(path)
    except ImageArchiveError as exc:
        return None, False, f"{exc.msg}: it is rewritten"
    return digest, normalized(image) in [normalized(t) for t in tags], None


def dockerfile_path(params):
    dockerfile = params["dockerfile"] or "Dockerfile"
    return os.path.normpath(os.path.join(params["context"], dockerfile))


def check_inputs(params):
    """Everything the options name, before any lock or docker command: InvalidArgument naming it."""
    if not REFERENCE.match(params["name"]):
        raise InvalidArgument(
            f"name {params['name']!r} is no image reference: use NAME[:TAG] in lowercase, "
            "for example data-miner:latest"
        )
    if params["lock_timeout"] < 0:
        raise InvalidArgument(
            f"lock_timeout={params['lock_timeout']} is negative: give seconds, 0 to try once"
        )
    if params["build"]:
        context = params["context"]
        if not os.path.isdir(context):
            what = "is not a directory" if os.path.exists(context) else "does not exist"
            raise InvalidArgument(
                f"the build context {context} {what}: set context to the directory holding the "
                "Dockerfile and the files it copies"
            )
        dockerfile = dockerfile_path(params)
        if not os.path.isfile(dockerfile):
            raise InvalidArgument(
                f"the Dockerfile {dockerfile} was not found: put it there, or set dockerfile "
                f"(a path relative to {context}, or absolute)"
            )
    archive = params["archive"]
    if archive:
        directory = os.path.dirname(os.path.abspath(archive))
        if not os.path.isdir(directory):
            raise InvalidArgument(
                f"the directory of archive {archive} ({directory}) does not exist: create it "
                "(ansible.builtin.file state=directory) or set another archive path"
            )
        if os.path.isdir(archive):
            raise InvalidArgument(
                f"archive {archive} is a directory: give a file path such as {archive}/image.tar"
            )


def build_argv(params, image):
    # --force-rm: a failed RUN leaves no container behind (BuildKit ignores the flag)
    argv = ["build", "--force-rm", "-t", image, "-f", dockerfile_path(params)]
    for key in sorted(params["build_args"]):
        argv += ["--build-arg", f"{key}={params['build_args'][key]}"]
    return [*argv, params["context"]]


def tail(text, lines=TAIL_LINES):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def save(docker, image, image_id, archive):
    """docker save to a temporary file beside the archive, checked, 0600, renamed over it."""
    directory = os.path.dirname(os.path.abspath(archive))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(archive)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        rc, out, err = docker.run("save", "-o", tmp, image)
        if rc != 0:
            raise StrataError(
                f"docker save {image} failed (rc={rc}): {tail(err or out, 5)}; "
                f"check the space in {directory}",
                error_kind="save_failed",
            )
        saved, _tags = archive_image(tmp)
        if saved != image_id:
            raise StrataError(
                f"docker save wrote {saved} for {image}, not the image just built ({image_id}): another "
                "tool retagged it meanwhile; run again",
                error_kind="save_failed",
            )
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # the rename must not publish unwritten blocks after a crash
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def archive_part(params, image, image_id):
    """archive, archive_changed (it does not hold ``image_id`` named ``image``), archive_before_id."""
    archive = params["archive"]
    if not archive:
        return dict(archive=None, archive_changed=False, archive_before_id=None, warnings=[])
    held, named, warning = archive_state(archive, image)
    return dict(
        archive=archive,
        archive_changed=not (held == image_id and named),
        archive_before_id=held,
        warnings=[warning] if warning else [],
    )


def plan(params, docker, image, before_id, lock):
    """Check mode: what a run would do; no lock taken, nothing written."""
    result = archive_part(params, image, before_id)
    commands = [docker.line(*build_argv(params, image))] if params["build"] else []
    if result["archive_changed"]:
        commands.append(docker.line("save", "-o", params["archive"], image))
    seen = lock.inspect()
    steps = ["would build" if params["build"] else "would take the local image", image]
    if params["archive"]:
        steps.append("and write the archive" if result["archive_changed"] else "and keep the archive")
    return dict(
        result,
        changed=result["archive_changed"],
        image=image,
        image_id=before_id,
        before_id=before_id,
        commands=commands,
        lock=dict(path=lock.path, taken_over_from=None, state=seen["state"], held_by=seen["held_by"]),
        msg=" ".join(steps) + f"; the lock is {seen['state']} ({seen['why']})",
    )


def under_lock(params, docker, image, before_id):
    if params["build"]:
        rc, out, err = docker.run(*build_argv(params, image))
        if rc != 0:
            output = tail("\n".join(part for part in (out, err) if part))
            raise BuildFailed(
                f"docker build of {image} failed (rc={rc}); nothing was saved. The last lines:\n"
                f"{tail(output, 10)}\nFix the Dockerfile or the context and run again",
                output_tail=output,
                image=image,
                before_id=before_id,
                commands=docker.commands,
            )
    image_id = docker.image_id(image)
    if image_id is None:
        raise RuntimeUnavailable(f"docker build of {image} succeeded, but docker has no image {image} now")
    result = archive_part(params, image, image_id)
    if result["archive_changed"]:
        save(docker, image, image_id, params["archive"])
    was = "unchanged" if image_id == before_id else f"was {before_id or 'not there'}"
    news = f"{image} is {image_id} ({was})"
    saved = f"; saved to {params['archive']}" if result["archive_changed"] else ""
    return dict(
        result,
        changed=image_id != before_id or result["archive_changed"],
        image=image,
        image_id=image_id,
        before_id=before_id,
        commands=docker.commands,
        msg=news + saved,
    )


def run(params, check_mode, run_command, get_bin_path):
    check_inputs(params)
    image = with_tag(params["name"])
    cli = get_bin_path("docker")
    if not cli:
        raise RuntimeUnavailable(
            "the docker CLI is not installed: apt-get install docker.io (or docker-ce-cli)"
        )
    docker = Docker(cli, params["docker_host"], run_command)
    docker.reachable()
    before_id = docker.image_id(image)
    if not params["build"] and before_id is None:
        raise InvalidArgument(
            f"there is no local image {image} to save (build: false): build it (build: true) "
            "or docker load it"
        )
    lock = BuildLock(
        params["lock_path"],
        f"strata.ops.image_build {image}",
        timeout=params["lock_timeout"],
        takeover_unowned=params["takeover_unowned"],
    )
    if check_mode:
        return plan(params, docker, image, before_id, lock)
    try:
        with lock:
            result = under_lock(params, docker, image, before_id)
    except StrataError as exc:
        # the lock's warnings (a takeover, a lock removed by hand) also belong to a failure
        exc.details.setdefault("lock", dict(path=lock.path, taken_over_from=lock.taken_over_from))
        exc.details["warnings"] = exc.details.get("warnings", []) + lock.warnings
        raise
    result["lock"] = dict(path=lock.path, taken_over_from=lock.taken_over_from)
    result["warnings"] += lock.warnings
    return result
