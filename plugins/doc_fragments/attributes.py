# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attribute descriptions shared by every strata.ops module.

A module uses it with ``extends_documentation_fragment: [strata.ops.attributes]`` and then
states only, per attribute, its C(support) (and C(details) where that helps) and, for
C(platform), its C(platforms). The fragment supplies the descriptions, which validate-modules
requires, so they read the same in every module.
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      - Runs with C(check_mode) and then changes nothing on the target, but still reports whether
        (and, where the module says so, what) it would have changed. Without support the task
        is skipped in check mode.
  diff_mode:
    description:
      - With C(--diff) (or C(diff) on the task) returns the state before and after each change,
        also in check mode, where it is the change that would be made.
  platform:
    description:
      - The target operating systems or families the module can act on.
    support: N/A
"""

    # Read-only modules add ``strata.ops.attributes.read_only`` and state only their platform.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode reports exactly what a normal run does.
  diff_mode:
    support: N/A
    details: The module never changes anything.
"""
