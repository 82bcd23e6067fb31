# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""method=kubelet: the kubelet's checkpoint API (POST /checkpoint/NAMESPACE/POD/CONTAINER).

The API is the kubelet's (Kubernetes 1.25+, ContainerCheckpoint feature, on by default since
1.30); the CRI runtime writes the archive on the node under /var/lib/kubelet/checkpoints/.
"""

import json

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument


def checkpoint_url(params):
    if not (params["kubelet_url"] and params["pod"] and params["container"]):
        raise InvalidArgument("method=kubelet needs kubelet_url, pod and container")
    base = params["kubelet_url"].rstrip("/")
    return f"{base}/checkpoint/{params['namespace']}/{params['pod']}/{params['container']}"


def kubelet_checkpoint(params, check_mode):
    """The module's result for method=kubelet."""
    url = checkpoint_url(params)
    if check_mode:
        return {"changed": True, "command": ["POST", url]}
    headers = {"Authorization": f"Bearer {params['kubelet_token']}"} if params["kubelet_token"] else {}
    # ansible.module_utils.urls costs ~0.1 s of imports that every CRIU dump (the common
    # path, timed by bench/bench_checkpoint.py) would otherwise pay.
    from ansible.module_utils.urls import open_url  # noqa: PLC0415 - kubelet path only

    try:
        response = open_url(
            url,
            method="POST",
            headers=headers,
            validate_certs=params["validate_certs"],
            ca_path=params["kubelet_ca_path"],
            timeout=params["timeout"],
        )
        answer = json.loads(response.read() or b"{}")
    except Exception as exc:  # urllib's HTTPError/URLError/ssl errors all land here
        raise ctr.RuntimeUnavailable(
            f"kubelet checkpoint API {url} failed: {exc}. The kubelet needs the ContainerCheckpoint feature "
            "(on by default since 1.30) and a CRI runtime with checkpoint support; the token needs "
            "create on nodes/checkpoint"
        ) from None
    return {"changed": True, "command": ["POST", url], "kubelet": answer}
