# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of strata.ops.k8s_apply_plan: the plan in the controller's own process.

The module only ever talks to the API from the controller. Run as a module, a converged deploy
paid for a fresh Python, the AnsiballZ payload and the imports (about 0.5 s) around 0.1 s of LISTs;
here the same code (module_utils/k8s/apply_plan.py), the same argument spec and the same failure
messages run where the task is evaluated.
"""

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.k8s import get_client
from ansible_collections.strata.ops.plugins.module_utils.k8s.apply_plan import ARGUMENT_SPEC, read_and_plan


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validated = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validated.error_messages:
            result.update(failed=True, msg="; ".join(validated.error_messages))
            return result
        params = validated.validated_parameters

        def client():
            return get_client(params["kubeconfig"], params["context"], params["api_timeout"])

        try:
            result.update(read_and_plan(params, client))
        except StrataError as exc:
            result.update(exc.details, failed=True, msg=exc.msg, error=exc.error_kind)
        return result
