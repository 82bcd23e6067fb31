#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: data_serve
short_description: Serve a tree over HTTP for one copy into a pod's volume; stop it and get the pod's report
version_added: "0.2.0"
description:
  - "O(state=started) starts a small HTTP server in the background on this (the source) host, bound to
    O(address) - the address the pod can reach - that answers only under a random token in the URL:
    C(pull.sh), a shell script made from the tree, and every file by number, with byte ranges, so
    C(curl -C -) resumes. The pod runs C(curl -fsS URL/pull.sh | sh -s URL /target): directories,
    files not yet complete (a partial one resumed), hard links, symlinks, modes and times; then it puts
    back the size and SHA-256 of every file, the link targets and every name under the target."
  - "O(state=stopped) stops that server and returns RV(copy_manifest): what the pod reported, as a
    manifest in P(strata.ops.tree_manifest#module)'s format (C(sha256)), to compare with the source's
    (P(strata.ops.tree_manifest_diff#filter))."
  - "What the benchmark operators found: into a Kubernetes volume, NFS writes hung in D-state,
    C(kubectl cp) needs tar in the image, a stdin pipe through C(kubectl exec) timed out after ~30 s; a
    plain HTTP server on the source host and C(curl) in a pod worked. The pod needs C(sh), C(curl) and
    coreutils or busybox (C(wc), C(sha256sum), C(touch -d @SECONDS), C(find -print0))."
  - The server ends by itself after O(lifetime) seconds, so a play that died before stopping it leaves
    nothing running for long. Owners and special files (fifos, devices) are not copied.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Says whether a server would be started or stopped; starts and stops nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
    support: full
options:
  path:
    description: The tree to serve (a directory on this host).
    type: path
    required: true
  state:
    description: C(started) serves the tree (a server already serving it is kept); C(stopped) stops it.
    type: str
    choices: [started, stopped]
    default: started
  address:
    description: The address to listen on, one the pod reaches this host at (required to start).
    type: str
  port:
    description: The port to listen on; C(0) picks a free one.
    type: int
    default: 0
  lifetime:
    description: Seconds after which the server stops by itself.
    type: int
    default: 86400
  state_dir:
    description: Where the server keeps its state, its access log and the pod's report (0700).
    type: path
    default: /var/lib/strata-ops/serve
"""

EXAMPLES = r"""
- name: Serve the data set to the pod network
  strata.ops.data_serve:
    path: /srv/dataset
    address: 10.0.0.5
  register: served

- name: Stop serving, with what the pod reported
  strata.ops.data_serve:
    path: /srv/dataset
    state: stopped
  register: report
"""

RETURN = r"""
url:
  description: The base URL, with its token (C(state=started)); the pod fetches C(URL/pull.sh).
  returned: when started
  type: str
port:
  description: The port it listens on.
  returned: when started
  type: int
files:
  description: The regular files it serves.
  returned: when started
  type: int
bytes:
  description: Their bytes.
  returned: when started
  type: int
unreadable:
  description: Source entries that could not be read, with the reason (not served).
  returned: when started
  type: dict
copy_manifest:
  description: What the pod reported, as a manifest (format, algorithm sha256, entries); empty when it
    reported nothing.
  returned: when stopped
  type: dict
"""

import hashlib
import json
import os
import secrets
import signal
import threading
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import (
    InvalidArgument,
    StrataError,
    run_module,
)
from ansible_collections.strata.ops.plugins.module_utils.state import atomic_write_bytes
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import serve


def _state_dir(params):
    key = hashlib.sha1(params["path"].rstrip("/").encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(params["state_dir"], key)


def _alive(state):
    if not state:
        return False
    try:
        os.kill(state["pid"], 0)
    except OSError:
        return False
    return True


def _serve_in_background(server, state_dir, lifetime):
    """Forks the server off (setsid, twice, stdio to /dev/null: Ansible waits for the module's
    output to close); returns the server's pid once it has written its state."""
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)

            def stop(_signum, _frame):
                raise SystemExit(0)

            signal.signal(signal.SIGTERM, stop)
            timer = threading.Timer(lifetime, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
            atomic_write_bytes(os.path.join(state_dir, "pid"), str(os.getpid()).encode(), mode=0o600)
            server.serve_forever()
        finally:
            os._exit(0)
    os.waitpid(first, 0)
    server.server_close()
    pid_path = os.path.join(state_dir, "pid")
    for _attempt in range(100):
        try:
            with open(pid_path) as handle:
                return int(handle.read())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise StrataError(f"the server did not start (no {pid_path} after 5 s)")


def _start(module, state_dir):
    params = module.params
    root = params["path"].rstrip("/") or "/"
    running = serve.read_state(state_dir)
    if _alive(running):
        return {"changed": False, **{k: running[k] for k in ("url", "port", "files", "bytes", "unreadable")}}
    if not params["address"]:
        raise InvalidArgument("address is required to start: the address of this host that the pod can reach")
    files, others, errors = serve.catalog(root)
    summary = {
        "files": len(files),
        "bytes": sum(entry["size"] for _i, _p, entry in files),
        "unreadable": errors,
    }
    if module.check_mode:
        return {"changed": True, "url": None, "port": params["port"], **summary}
    token = secrets.token_hex(16)
    try:
        server = serve.Server((params["address"], params["port"]), root, token, state_dir, files, others)
    except OSError as exc:
        raise StrataError(
            f"cannot listen on {params['address']}:{params['port']}: {exc.strerror or exc}; give an address "
            "of this host (ip -brief address) and a free port, or port 0"
        ) from None
    for stale in ("report", "names", "pid"):  # an earlier copy's
        if os.path.exists(os.path.join(state_dir, stale)):
            os.unlink(os.path.join(state_dir, stale))
    port = server.server_address[1]
    host = f"[{params['address']}]" if ":" in params["address"] else params["address"]
    url = f"http://{host}:{port}/{token}"
    catalog = {"files": [[i, p, e] for i, p, e in files], "others": [[p, e, t] for p, e, t in others]}
    atomic_write_bytes(os.path.join(state_dir, "catalog.json"), json.dumps(catalog).encode(), mode=0o600)
    pid = _serve_in_background(server, state_dir, params["lifetime"])
    state = {"pid": pid, "url": url, "port": port, "path": root, "started": time.time(), **summary}
    atomic_write_bytes(serve.state_file(state_dir), json.dumps(state).encode(), mode=0o600)
    return {"changed": True, "url": url, "port": port, **summary}


def _stop(module, state_dir):
    running = serve.read_state(state_dir)
    alive = _alive(running)
    result = {"changed": alive, "copy_manifest": {}}
    if module.check_mode:
        return result
    if alive:
        os.kill(running["pid"], signal.SIGTERM)
        for _attempt in range(100):
            if not _alive(running):
                break
            time.sleep(0.05)
        else:
            os.kill(running["pid"], signal.SIGKILL)
    try:
        with open(os.path.join(state_dir, "catalog.json")) as handle:
            catalog = json.load(handle)
        with open(os.path.join(state_dir, "report"), "rb") as handle:
            report = handle.read()
        with open(os.path.join(state_dir, "names"), "rb") as handle:
            names = handle.read()
    except (OSError, ValueError):
        return result
    files = [tuple(item) for item in catalog["files"]]
    others = [tuple(item) for item in catalog["others"]]
    result["copy_manifest"] = serve.copy_manifest(files, others, report, names)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["started", "stopped"], default="started"),
            address=dict(type="str"),
            port=dict(type="int", default=0),
            lifetime=dict(type="int", default=86400),
            state_dir=dict(type="path", default="/var/lib/strata-ops/serve"),
        ),
        supports_check_mode=True,
    )

    def work():
        if module.params["lifetime"] < 1:
            raise InvalidArgument(f"lifetime must be 1 or more seconds, got {module.params['lifetime']}")
        state_dir = _state_dir(module.params)
        if module.params["state"] == "stopped":
            return _stop(module, state_dir)
        return _start(module, state_dir)

    run_module(module, work)


if __name__ == "__main__":
    main()
