# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter strata.ops.config_layers: an application's settings from layers, the later winning."""

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

DOCUMENTATION = r"""
name: config_layers
short_description: Merge configuration layers (defaults, a run's config, overrides) into one
version_added: "0.2.0"
description:
  - Merges a list of mappings in order, each later one over the ones before, as the data-miner
    pipeline builds its ConfigMap from the application's defaults file, a run config file and
    C(k3s_app_overrides) from C(cluster_config.yaml).
  - Mappings merge key by key at every depth; any other value (a string, a number, a list) of a
    later layer replaces the earlier one whole; a key set to null in a later layer is removed
    (as Helm does with values).
  - A layer that is not a mapping is an error naming the layer (by its position or O(names)) and
    the key path, as is a key that is a mapping in one layer and not in another unless the later
    layer sets it to null first.
  - With O(provenance=true) the result has three keys, C(config) (the merged mapping),
    C(provenance) (each leaf's dotted path to the name of the layer it came from), which a
    C(--diff) or a report can show, and C(warnings).
  - A later layer that sets a key to an empty string over a value of an earlier layer is merged as
    asked, with a warning naming the key, the layers and the value it hides (an empty string in a run
    config once silently replaced a default for the data-miner operators).
options:
  _input:
    description: The layers, lowest precedence first; C(null) layers are skipped.
    type: list
    elements: dict
    required: true
  names:
    description: A name per layer for errors and provenance; default C(layer 1), C(layer 2) ...
    type: list
    elements: str
  provenance:
    description: Return the merged mapping with the layer of every leaf.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The ConfigMap data of the data-miner app
  ansible.builtin.set_fact:
    app_config: >-
      {{ [app_defaults, run_config, cluster_config.k3s_app_overrides]
         | strata.ops.config_layers(names=['defaults', 'run config', 'k3s_app_overrides']) }}
"""

RETURN = r"""
_value:
  description: The merged mapping (or, with O(provenance), the mapping and the layer of each leaf).
  type: dict
"""


def _merge(into, layer, name, path, origin, warnings):  # noqa: PLR0917 - one recursion's state
    for key, value in layer.items():
        where = f"{path}.{key}" if path else str(key)
        if value is None:
            into.pop(key, None)
            _forget(origin, where)
            continue
        current = into.get(key)
        if isinstance(value, dict):
            if key in into and not isinstance(current, dict):
                raise AnsibleFilterError(
                    f"config_layers: {name} makes {where} a mapping, but an earlier layer set it to "
                    f"{current!r}; set it to null first in {name} if the mapping is meant to replace it"
                )
            into[key] = _merge(dict(current or {}), value, name, where, origin, warnings)
            continue
        if isinstance(current, dict):
            raise AnsibleFilterError(
                f"config_layers: {name} sets {where} to {value!r}, but an earlier layer made it a "
                f"mapping ({', '.join(sorted(map(str, current)))}); set {where} to null first if it is "
                "meant to replace it"
            )
        if value == "" and current not in (None, ""):
            # The operators' incident: an empty string in a run config silently replaced a default.
            warnings.append(
                f"{name} sets {where} to an empty string over {origin.get(where, 'an earlier layer')}'s "
                f"{current!r}; the application gets ''. Take the key out of {name} to keep "
                f"{current!r}"
            )
        into[key] = value
        _forget(origin, where)
        origin[where] = name
    return into


def _forget(origin, where):
    for key in [k for k in origin if k == where or k.startswith(where + ".")]:
        del origin[key]


def config_layers(layers, names=None, provenance=False):
    if not isinstance(layers, list):
        raise AnsibleFilterError(f"config_layers: expects a list of mappings, got {type(layers).__name__}")
    names = list(names or [])
    if names and len(names) != len(layers):
        raise AnsibleFilterError(f"config_layers: {len(names)} names for {len(layers)} layers")
    merged, origin, warnings = {}, {}, []
    for index, layer in enumerate(layers):
        name = names[index] if names else f"layer {index + 1}"
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise AnsibleFilterError(
                f"config_layers: {name} is a {type(layer).__name__}, not a mapping of settings"
            )
        _merge(merged, layer, name, "", origin, warnings)
    for warning in warnings:
        Display().warning(f"config_layers: {warning}")
    return {"config": merged, "provenance": origin, "warnings": warnings} if provenance else merged


class FilterModule:
    def filters(self):
        return {"config_layers": config_layers}
