"""What the unit tests need from ansible-core that older cores (meta/runtime.yml's range) lack."""

import contextlib
import json
from unittest import mock

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19: the same, as AnsibleModule reads its arguments there

    @contextlib.contextmanager
    def patch_module_args(args=None):
        with mock.patch.object(
            basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        ):
            yield


__all__ = ["patch_module_args"]
