"""The reliability sweep (issue 20) runs on the same real test bed as tests/integration and shares
its fixtures and helpers: import them from there (``from tests.integration.conftest import ...``,
``from tests.integration.k8s_fixtures import ...``) rather than copying them."""

from tests.integration.conftest import zfs_pool  # noqa: F401  # pylint: disable=unused-import
