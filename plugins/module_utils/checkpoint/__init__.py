# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checkpoint and restore of pods and processes (strata.ops.pod_checkpoint), split by concern:
target (what to dump), dump, restore, staging (bind sources a restore must not unmount), gpu,
manifest, kubelet."""

from ansible_collections.strata.ops.plugins.module_utils.criu import CriuError

# How a pod is stopped after a checkpoint taken with it left running: its kubelet starts a container
# whose process ended again (restartPolicy Always), so through its workload.
STOP_A_POD = (
    "to stop the pod, scale its Deployment or StatefulSet to 0 (playbooks/checkpoint.yml does that "
    "after the checkpoint with pod_checkpoint_leave_running=false)"
)


class BadCheckpoint(CriuError):
    """A directory that is not a usable pod_checkpoint dump."""


class CheckpointJob:
    """What a dump and a restore share: the module's parameters, check mode and collaborators
    (``run_command(argv, environ_update=None) -> (rc, out, err)``, ``docker`` making a Docker API
    client, ``find_freezer`` finding what freezes and thaws CUDA processes, the GPUs' /proc dir)."""

    def __init__(self, params, check_mode, run_command, *, docker, find_freezer, gpus_dir):
        self.p = params
        self.check_mode = check_mode
        self.run = run_command
        self.docker = docker
        self.find_freezer = find_freezer
        self.gpus_dir = gpus_dir
