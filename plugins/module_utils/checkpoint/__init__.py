# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checkpoint and restore of pods and processes (strata.ops.pod_checkpoint), split by concern:
target (what to dump), dump, restore, staging (bind sources a restore must not unmount), gpu,
manifest, kubelet."""

from ansible_collections.strata.ops.plugins.module_utils.criu import CriuError


class BadCheckpoint(CriuError):
    """A directory that is not a usable pod_checkpoint dump."""
