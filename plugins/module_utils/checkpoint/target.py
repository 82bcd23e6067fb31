# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a checkpoint is taken of: a host process, a CRI container (crictl) or a Docker container."""

import os

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import criu


def docker_api(params, docker=ctr.DockerAPI):
    """The Docker API on ``docker_socket``; a clear error when dockerd is not there."""
    if not os.path.exists(params["docker_socket"]):
        no_crictl = "" if criu.find_executable("crictl") else "; crictl is not installed either"
        raise ctr.RuntimeUnavailable(
            f"Docker socket {params['docker_socket']} does not exist (is dockerd running?){no_crictl}"
        )
    return docker(params["docker_socket"])


def find_target(params, run_command, docker=ctr.DockerAPI):
    """The target as a dict: runtime (process, cri, docker), pid, container_id, image, ..."""
    if params["pid"] is not None:
        if not criu.alive(params["pid"]):
            raise criu.TargetGone(f"process {params['pid']} does not exist (or is a zombie)")
        return {"runtime": "process", "pid": params["pid"], "container_id": None, "image": None}
    crictl = criu.find_executable("crictl")
    if params["pod"] and (params["runtime"] == "cri" or (params["runtime"] == "auto" and crictl)):
        if not crictl:
            raise ctr.RuntimeUnavailable("runtime=cri but crictl is not installed on this host")
        argv = ctr.crictl_argv(crictl, params["cri_endpoint"])
        return ctr.crictl_target(run_command, argv, params["pod"], params["namespace"], params["container"])
    api = docker_api(params, docker)
    return ctr.docker_target(
        ctr.find_docker_container(api, params["pod"], params["namespace"], params["container"])
    )


def default_name(params, target):
    """The prefix of the dump directories: name, NAMESPACE-POD-CONTAINER, the container or pid-PID."""
    if params["name"]:
        return params["name"]
    if params["pod"]:
        return "-".join(x for x in (params["namespace"], params["pod"], params["container"]) if x)
    if target.get("container_name"):
        return target["container_name"]
    return f"pid-{target['pid']}"
