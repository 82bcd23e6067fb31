# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory plugin strata.ops.cluster_config: the k3s pipeline's cluster_config.yaml as inventory."""

DOCUMENTATION = r"""
name: cluster_config
short_description: The k3s pipeline's cluster_config.yaml as an inventory
version_added: "0.1.0"
description:
  - Reads the operators' C(cluster_config.yaml) (C(cluster.nodes), C(storage), C(image), C(seaweedfs),
    C(resource_presets), C(workers), C(infrastructure), C(k3s_app_overrides)) as it is, checks it
    against its schema and resolves its C(${a.b}) references, then makes one host per node of
    C(cluster.nodes).
  - "Groups: C(strata_hosts) and C(strata_cluster_nodes) (every node, the master first),
    C(strata_gpu) (nodes with C(gpu: true) or the label C(strata.io/gpu) or
    C(nvidia.com/gpu.present) set to C(true)), C(strata_storage_only), C(k3s_server) (the master),
    C(k3s_agents) (the workers), C(k3s_cluster) (both), C(strata_role_master) and C(strata_role_worker)."
  - "Host variables: C(ansible_host) (the node's ip), C(strata_node_role), C(strata_seaweedfs_disk_limit_mb)
    (the node's C(disk_limit_mb), else C(seaweedfs.default_disk_limit_mb)), C(strata_node_labels),
    C(strata_node_gpu), C(strata_storage_only), C(strata_node_workers) (the workers that may run
    there; always empty on a storage-only node) and C(cluster_k3s_role) (server or agent)."
  - "Variables of C(all): C(cluster_config) (the whole document, references resolved),
    C(cluster_config_file), C(strata_namespace) (C(cluster.namespace)), C(strata_cluster_engine)
    (C(k3s)) and, when given, C(strata_k3s_version) and from C(cluster.gpu_sharing) the C(cluster) role's
    C(cluster_k3s_gpu_sharing) and C(cluster_k3s_gpu_time_slices)."
  - "Every problem in the file is reported at once, each with its dotted path in the file, for example
    C(workers.filter.schedule_on: 'gpus' is not one of all, master, gpu). Unknown keys are refused."
  - The source is either the operators' file itself, named C(cluster_config.yml) or C(cluster_config.yaml)
    (or C(<anything>.cluster_config.yml)) with a top-level C(cluster) key, or an inventory file with
    C(plugin) and O(path) pointing at it. The plugin must be enabled before C(yaml) in
    C([inventory] enable_plugins), or the C(yaml) plugin takes the operators' file for groups.
  - An invalid operators' file stops the run with the problems (exit status 1), because Ansible would
    otherwise hand the file to the next plugin (C(yaml)) and lose them. An invalid file behind the
    plugin form fails as any inventory source does.
  - The values are data, never templated by Ansible (C({{ }}) stays as it is); C(${a.b}) is the
    file's own reference syntax.
  - See docs/data-miner.md for the schema.
options:
  plugin:
    description: The name of this plugin, in the plugin form only.
    type: str
    required: true
    choices: [strata.ops.cluster_config, cluster_config]
  path:
    description:
      - The operators' C(cluster_config.yaml), in the plugin form; relative to the directory of the
        inventory file that names it.
    type: str
    required: true
"""

EXAMPLES = r"""
# The operators' file directly (the plugin enabled in ansible.cfg):
#   ansible-playbook -i /srv/data-miner/cluster_config.yaml playbooks/site.yml
#
# Or an inventory file of its own, inventories/data-miner/nodes.yml:
plugin: strata.ops.cluster_config
path: ../../../data-miner/cluster_config.yaml
"""

# Imports follow DOCUMENTATION/EXAMPLES, as validate-modules wants for every plugin.
import os  # noqa: E402
import re  # noqa: E402

import yaml  # noqa: E402
from ansible.errors import AnsibleParserError  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin  # noqa: E402

from ansible_collections.strata.ops.plugins.module_utils import cluster_config  # noqa: E402

_NAMES = re.compile(r"(.+\.)?cluster_config\.ya?ml")
_PLUGIN_LINE = re.compile(r"^plugin:\s*['\"]?(strata\.ops\.)?cluster_config['\"]?\s*(#.*)?$", re.MULTILINE)
_PLUGIN_NAMES = ("strata.ops.cluster_config", "cluster_config")


class _UniqueKeyLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """A YAML loader that refuses a key given twice in one map (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice (line {seen[key] + 1} and line "
                    f"{key_node.start_mark.line + 1}); YAML would silently keep the last",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_file(path):
    """The YAML document in ``path`` (duplicate keys refused), or AnsibleParserError."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)  # a SafeLoader
    except OSError as exc:
        raise AnsibleParserError(f"cannot read the cluster config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise AnsibleParserError(f"{path} is not valid YAML: {exc}") from exc


class InventoryModule(BaseInventoryPlugin):
    NAME = "strata.ops.cluster_config"

    def verify_file(self, path):
        if not super().verify_file(path) or not path.endswith((".yml", ".yaml")):
            return False
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError):
            return False
        if _PLUGIN_LINE.search(text):
            return True
        if not _NAMES.fullmatch(os.path.basename(path)):
            return False
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
        except yaml.YAMLError:
            return bool(re.search(r"^cluster:", text, re.MULTILINE))  # ours, broken: parse says why
        return isinstance(data, dict) and "cluster" in data and "plugin" not in data

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        data = load_file(path)
        if isinstance(data, dict) and data.get("plugin") in _PLUGIN_NAMES:
            self._read_config_data(path)
            source = os.path.expanduser(str(self.get_option("path")))
            source = os.path.join(os.path.dirname(os.path.abspath(path)), source)
            self.populate(load_file(source), source)
            return
        try:
            self.populate(data, os.path.abspath(path))
        except AnsibleParserError as exc:
            # The manager would try the next plugin (yaml), which takes any map for groups and so
            # would "parse" this file and drop the problems: stop here instead.
            self.display.error(str(exc))
            raise SystemExit(1) from exc

    def populate(self, data, source):
        """Check ``data`` (the file at ``source``) and add its hosts, groups and variables."""
        checked = cluster_config.check(data)
        if checked.errors:
            count = len(checked.errors)
            raise AnsibleParserError(
                f"{source}: {count} problem{'s' if count > 1 else ''} in the cluster config:\n  "
                + "\n  ".join(checked.errors)
            )
        for warning in checked.warnings:
            self.display.warning(f"{source}: {warning}")
        inventory = self.inventory
        for group in (
            "strata_hosts",
            "strata_cluster_nodes",
            "strata_gpu",
            "strata_storage_only",
            "k3s_cluster",
            "k3s_server",
            "k3s_agents",
            "strata_role_master",
            "strata_role_worker",
        ):
            inventory.add_group(group)
        inventory.add_child("k3s_cluster", "k3s_server")
        inventory.add_child("k3s_cluster", "k3s_agents")
        for node in cluster_config.nodes(checked.doc):
            name = inventory.add_host(node["name"], group="strata_hosts")
            groups = ["strata_cluster_nodes", f"strata_role_{node['role']}"]
            groups.append("k3s_server" if node["role"] == "master" else "k3s_agents")
            if node["gpu"]:
                groups.append("strata_gpu")
            if node["storage_only"]:
                groups.append("strata_storage_only")
            for group in groups:
                inventory.add_host(name, group=group)
            for key, value in (
                ("ansible_host", node["ip"]),
                ("strata_node_role", node["role"]),
                ("strata_seaweedfs_disk_limit_mb", node["disk_limit_mb"]),
                ("strata_node_labels", node["labels"]),
                ("strata_node_gpu", node["gpu"]),
                ("strata_storage_only", node["storage_only"]),
                ("strata_node_workers", node["workers"]),
                ("cluster_k3s_role", "server" if node["role"] == "master" else "agent"),
            ):
                inventory.set_variable(name, key, value)
        doc = checked.doc
        inventory.set_variable("all", "cluster_config", doc)
        inventory.set_variable("all", "cluster_config_file", source)
        inventory.set_variable("all", "strata_namespace", doc["cluster"]["namespace"])
        inventory.set_variable("all", "strata_cluster_engine", "k3s")
        if "k3s_version" in doc["cluster"]:
            inventory.set_variable("all", "strata_k3s_version", doc["cluster"]["k3s_version"])
        if "gpu_sharing" in doc["cluster"]:
            # Layer 3 configures the device plugin the way the rendered pods ask for GPUs.
            mode, slices = cluster_config.gpu_sharing(doc)
            inventory.set_variable("all", "cluster_k3s_gpu_sharing", mode)
            if slices is not None:
                inventory.set_variable("all", "cluster_k3s_gpu_time_slices", slices)
