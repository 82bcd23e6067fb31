#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: image_build
short_description: Build an image with the Docker CLI under a build lock that records its owner, and save it
version_added: "0.2.0"
description:
  - Builds the image O(name) with C(docker build) from O(context) under the build lock O(lock_path),
    the file the data-miner operators' provision script uses, and optionally saves it with
    C(docker save) to O(archive), the file the data-miner images flow copies to the nodes.
  - "The lock records its owner: pid, the process start time (C(/proc/<pid>/stat) field 22, so a
    reused pid is not taken for the owner), boot id, host name, command and start. A lock whose owner
    is alive is waited for up to O(lock_timeout) seconds; one whose owner is gone (the pid runs no
    more, runs another process, or the lock is from before a reboot) is taken over with a warning
    naming the dead owner. A lock of another host is only waited for."
  - A lock file that is empty or not this collection's (an older tool, C(touch)) is waited for and then
    refused, naming its age; delete it when no build runs, or set O(takeover_unowned).
  - With O(build=true) the build runs on every run; Docker's build cache makes an unchanged build
    give the same image ID. C(changed) is true when the image ID after the build differs from the
    one before, or when the archive was rewritten.
  - The archive is rewritten only when the image ID it holds (the config digest in its
    C(manifest.json)) differs from the image's, or it does not name the image as O(name). It is
    written to a temporary file in the same directory (mode 0600) and renamed over, so a reader
    never sees half an archive.
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Takes no lock and builds nothing; reports the build it would run, whether the archive would
        be written (assuming the build gives the image ID the image has now, as a cached build does)
        and who holds the lock.
  diff_mode:
    support: none
  platform:
    platforms: linux
    support: full
options:
  name:
    description:
      - The image reference to build or save, C(NAME[:TAG]) (C(data-miner) is C(data-miner:latest)).
    type: str
    required: true
  build:
    description:
      - Run C(docker build). V(false) takes the local image O(name) as it is and only saves it.
    type: bool
    default: true
  context:
    description:
      - The build context directory. Required with O(build=true).
    type: path
  dockerfile:
    description:
      - The Dockerfile; a relative path is relative to O(context). Default C(Dockerfile) in O(context).
    type: path
  build_args:
    description:
      - C(--build-arg) values, passed as C(KEY=VALUE); quote values in YAML (C("12.4")) so they stay strings.
    type: dict
    default: {}
  archive:
    description:
      - Save the image here with C(docker save) (mode 0600), unless it holds that image already.
        Required with O(build=false). Its directory must exist.
    type: path
  lock_path:
    description:
      - The build lock file. The default is the path the data-miner operators' provision script uses,
        so the two never build at the same time.
    type: path
    default: /tmp/data-miner_build.lock
  lock_timeout:
    description:
      - Seconds to wait for a live owner of the lock before failing; V(0) tries once.
    type: int
    default: 300
  takeover_unowned:
    description:
      - Take over a lock file that holds no owner record (empty, or another tool's) instead of
        failing. Only when no other tool builds with that file.
    type: bool
    default: false
  docker_host:
    description:
      - The Docker daemon to use (C(docker -H)), for example C(unix:///run/docker.sock). Default the
        CLI's own (C(DOCKER_HOST), or its default socket).
    type: str
notes:
  - Copy the archive to the nodes and import it there with M(strata.ops.containerd_image); the
    data-miner images flow (C(playbooks/data_miner/images.yml)) does both.
  - The image ID is the config digest, as Docker's own image store reports it (C(docker images)). With
    the containerd image store enabled in dockerd, IDs are manifest digests and the archive is
    rewritten on every run.
requirements:
  - the Docker CLI (C(docker)) and a Docker daemon it can reach
"""

EXAMPLES = r"""
- name: Build the pipeline's image and save it for the nodes
  strata.ops.image_build:
    name: data-miner:latest
    context: /srv/data-miner/src
    build_args:
      CUDA_VERSION: "12.4"
    archive: /var/tmp/data-miner.tar
  register: data_miner_image

- name: Save an image built elsewhere on this host (no build)
  strata.ops.image_build:
    name: data-miner:latest
    build: false
    archive: /var/tmp/data-miner.tar
"""

RETURN = r"""
image:
  description: The image reference, with its tag.
  returned: always
  type: str
  sample: data-miner:latest
image_id:
  description: The image ID after the run (in check mode, the image ID now), or null when there is none.
  returned: always
  type: str
  sample: sha256:0f5d3a8c7e1b2a4d6c8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c
before_id:
  description: The image ID O(name) had before, or null when there was no such image.
  returned: always
  type: str
archive:
  description: The archive path, or null without O(archive).
  returned: always
  type: str
archive_changed:
  description: Whether the archive was (in check mode, would be) written.
  returned: always
  type: bool
archive_before_id:
  description: The image ID the archive held before, or null when there was none.
  returned: always
  type: str
lock:
  description:
    - The build lock. C(taken_over_from) is the dead owner's record when the lock was taken over,
      else null. In check mode C(state) (free, alive, dead, foreign, unowned) and C(held_by) say who
      holds it now; on a timeout C(held_by) is the owner waited for.
  returned: always
  type: dict
  sample: {"path": "/tmp/data-miner_build.lock", "taken_over_from": {"pid": 4242, "start_time": 1234567,
           "boot_id": "9f1c...", "host": "pavanjci", "command": "docker build data-miner:latest",
           "started": "2026-02-14T09:12:00.000Z"}}
commands:
  description: The docker commands run (in check mode, the ones that would run).
  returned: always
  type: list
  elements: str
output_tail:
  description: The last lines of the C(docker build) output.
  returned: the build failed
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils.common import run_module
from ansible_collections.strata.ops.plugins.module_utils.image_build import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            build=dict(type="bool", default=True),
            context=dict(type="path"),
            dockerfile=dict(type="path"),
            build_args=dict(type="dict", default={}),
            archive=dict(type="path"),
            lock_path=dict(type="path", default="/tmp/data-miner_build.lock"),
            lock_timeout=dict(type="int", default=300),
            takeover_unowned=dict(type="bool", default=False),
            docker_host=dict(type="str"),
        ),
        required_if=[("build", True, ("context",)), ("build", False, ("archive",))],
        supports_check_mode=True,
    )
    run_module(
        module,
        lambda: run(
            module.params,
            module.check_mode,
            module.run_command,
            lambda name: module.get_bin_path(name, required=False),
        ),
    )


if __name__ == "__main__":
    main()
