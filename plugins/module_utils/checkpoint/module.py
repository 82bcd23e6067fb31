# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What strata.ops.pod_checkpoint does with its parameters: check them, then dump, restore or ask
the kubelet."""

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import containerd, kubelet
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.dump import Dumper
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.restore import Restorer
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument


def kubernetes_client(params):
    # The kubernetes library costs ~0.3 s of imports: only method=kubelet loads it.
    from ansible_collections.strata.ops.plugins.module_utils.k8s.kubeconfig import get_client  # noqa: PLC0415

    return get_client(
        kubeconfig=params["kubeconfig"], context=params["context"], api_timeout=params["api_timeout"]
    )


def run(params, check_mode, run_command):
    """The module's result for ``params``; errors are StrataErrors."""
    if params["keep"] < 0:
        keep = params["keep"]
        raise InvalidArgument(f"keep must be 0 (keep all) or more, got {keep}")
    if params["pre_dumps"] < 0:
        raise InvalidArgument(f"pre_dumps must be 0 (one plain dump) or more, got {params['pre_dumps']}")
    if params["cuda_lock_timeout"] < 0:
        lock_timeout = params["cuda_lock_timeout"]
        raise InvalidArgument(f"cuda_lock_timeout must be 0 (no timeout) or more seconds, got {lock_timeout}")
    if params["method"] == "kubelet":
        if params["state"] == "restored":
            return kubelet.restore(params, check_mode, lambda: kubernetes_client(params), run_command)
        return kubelet.dump(params, check_mode, lambda: kubernetes_client(params), run_command)
    if params["method"] == "containerd":
        job = containerd.restore if params["state"] == "restored" else containerd.dump
        return job(params, check_mode, run_command)
    if params["state"] == "restored":
        return Restorer(params, check_mode, run_command).run_state()
    if params["pid"] is None and not params["pod"] and not params["container"]:
        raise InvalidArgument("say what to dump: pod (with namespace/container), container, or pid")
    return Dumper(params, check_mode, run_command).run_state()
