#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
---
module: health_report
short_description: Write a health_check run as report.json and a static report.html, with an index of runs
version_added: "0.1.0"
description:
  - Takes a M(strata.ops.cluster_health) result and, per host, a M(strata.ops.storage_info) result
    with what layers 2 and 4 expect there, and writes them under O(report_dir) as one run
    directory named by the UTC time of the run (for example C(20250101T120000Z)).
  - C(report.json) is the run as data (schema C(strata.ops.health_report/1), see
    C(docs/health-report.md)).
  - C(report.html) is one static file (CSS inline, no script, nothing fetched) that opens from
    C(file://) or as an AWX artifact. Its first line is the verdict. Below it are the layer rows
    of each host, green or red, each with what was found, what was expected and the playbook that
    fixes it, then the cluster (problems, workloads, nodes, PVs), what backs each storage path and
    how full it is, the local snapshots against the tip with the last download's rate as a chart,
    and the last transfer, the checkpoints and runner isolation per host.
  - C(index.html) in O(report_dir) lists the runs, newest first, with a sparkline of the problem
    count per run. It is written again on every run.
  - Every value from the cluster or a host is HTML-escaped. Files are written to a temporary
    file and renamed, mode C(0644).
author:
  - strata.ops maintainers (!UNKNOWN)
extends_documentation_fragment:
  - strata.ops.attributes
attributes:
  check_mode:
    support: full
    details: Builds the report and names the files it would write; writes nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    details: Runs on the controller; writes only below O(report_dir).
options:
  report_dir:
    description:
      - Directory of the reports, created with its parents when missing.
      - Each run adds a directory of its own below it; older run directories are never removed.
    type: path
    required: true
  cluster:
    description:
      - The registered result of M(strata.ops.cluster_health) (a failed one is shown as a cluster
        problem).
      - Without it the page says the cluster was not checked.
    type: dict
  hosts:
    description:
      - Host name to what was read on it, a dict with C(storage) (the registered result of
        M(strata.ops.storage_info)) and C(expect) (what layers 2 and 4 expect there, a list of
        C(layer), C(check) and C(path), plus C(dataset), C(size_bytes) or C(requires) by check).
      - The checks are C(dataset) (the path is that mounted ZFS dataset), C(tmpfs) (a tmpfs of
        C(size_bytes) is mounted at the path) and C(fstab) (its fstab line asks for the
        C(requires) unit, C(zfs-mount.service) by default).
      - C(rows) instead of C(expect) gives the rows already made, each a dict with C(layer),
        C(check), C(path), C(ok), C(found), C(expected), C(problem) and C(fix) (see
        C(docs/health-report.md)).
      - A host without a storage result (unreachable, or failed before its read) gets one red row.
      - Optional per host, as the role P(strata.ops.health_check#role) reads them - C(snapshots) (C(dir),
        C(rpc_endpoints) (a count), C(freshness) (a M(strata.ops.snapshot_freshness) result),
        C(status_file) and C(status_text) (M(strata.ops.snapshot_fetch)'s status file as text)) and
        C(activity) (C(transfer_path), C(transfer_text) (a data_transfer progress file as text),
        C(checkpoints) (a M(strata.ops.pod_checkpoint_info) result) and C(isolation) (what the role
        keeps of runner isolation's state file)). A storage result read with C(usage) adds pool,
        dataset and ramdisk fill. See C(docs/health-report.md).
    type: dict
    default: {}
  controller:
    description:
      - The controller's own reads, C(name) and C(activity) (as a host's) - runner isolation's record,
        which C(playbooks/experiment_enter.yml) keeps on the controller when the runner config is a
        Helm ConfigMap. Shown in the activity section as C(NAME (controller)).
    type: dict
    default: {}
  keep:
    description:
      - How many runs, newest first, C(index.html) lists.
    type: int
    default: 50
notes:
  - 'Runs on the controller (C(delegate_to: localhost)).'
  - The role P(strata.ops.health_check#role) calls it once per run when C(health_check_report_dir) is set.
seealso:
  - module: strata.ops.cluster_health
  - module: strata.ops.storage_info
"""

EXAMPLES = r"""
- name: Write the report of this run
  strata.ops.health_report:
    report_dir: /var/lib/strata-ops/health
    cluster: "{{ health_check_cluster }}"
    hosts:
      strata-lab-1:
        storage: "{{ hostvars['strata-lab-1'].health_check_storage }}"
        expect:
          - {layer: 2, check: dataset, path: /srv/kind, dataset: lab/DATA/srv/kind}
          - {layer: 4, check: tmpfs, path: /srv/kind/solana/ramdisk, size_bytes: 67108864}
          - {layer: 4, check: fstab, path: /srv/kind/solana/ramdisk}
  delegate_to: localhost
  run_once: true
  register: report

- name: Where it is
  ansible.builtin.debug:
    msg: "{{ report.verdict }} - {{ report.html_path }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
json_path:
  description: The run's report.json (in check mode, the file it would write).
  returned: always
  type: str
  sample: /var/lib/strata-ops/health/20250101T120000Z/report.json
html_path:
  description: The run's report.html (in check mode, the file it would write).
  returned: always
  type: str
  sample: /var/lib/strata-ops/health/20250101T120000Z/report.html
index_path:
  description: The index of runs, O(report_dir)/index.html.
  returned: always
  type: str
  sample: /var/lib/strata-ops/health/index.html
run_dir:
  description: The run's directory, named by the UTC time of the run (C(-2) and up appended when taken).
  returned: always
  type: str
  sample: /var/lib/strata-ops/health/20250101T120000Z
problems:
  description: Number of problems, the cluster's plus the red storage rows.
  returned: always
  type: int
  sample: 2
healthy:
  description: True when there is no problem.
  returned: always
  type: bool
verdict:
  description: The page's first line.
  returned: always
  type: str
  sample: "3 problems: 1 storage invariant broken on strata-lab-2; 2 in the cluster (Deployment, Pod)"
broken:
  description: One line per red storage row, the host, what is wrong and the playbook that fixes it.
  returned: always
  type: list
  elements: str
  sample:
    - "strata-lab-2: /srv/kind/solana/ramdisk has 1048576 bytes, should have 67108864.
      Layer 4 fixes it: run playbooks/layer4_workload_storage.yml."
html_bytes:
  description: Size of report.html in bytes.
  returned: always
  type: int
  sample: 18250
runs:
  description: Number of runs C(index.html) lists.
  returned: when files were written (not in check mode)
  type: int
  sample: 12
msg:
  description: In check mode, the files a run would write.
  returned: in check mode
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.strata.ops.plugins.module_utils import health_page
from ansible_collections.strata.ops.plugins.module_utils.common import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            report_dir=dict(type="path", required=True),
            cluster=dict(type="dict"),
            hosts=dict(type="dict", default={}),
            controller=dict(type="dict", default={}),
            keep=dict(type="int", default=50),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda: health_page.run(module.params, module.check_mode))


if __name__ == "__main__":
    main()
