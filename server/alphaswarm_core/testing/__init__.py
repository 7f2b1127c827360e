"""The provider contract suite, shipped with the package for provider authors.

Third-party providers run the same assertions as the built-in ones, with plain
pytest (and pytest-asyncio) in their own repository::

    from alphaswarm_core.testing import ProviderContract

    class TestMyProvider(ProviderContract):
        expected_capabilities = frozenset({"start", "stop", "scale", "status", "list"})

and three fixtures, ``provider``, ``spec_factory`` and ``namespace`` (plus
``leftovers`` with ``delete`` and ``log_spec_factory`` with ``logs``; see
``contract``). Importing this package needs pytest; the server never imports it.
"""

from .contract import (
    SETTLE_TIMEOUT,
    Leftovers,
    ProviderContract,
    SpecFactory,
    by_instance,
    collect_logs,
    instance_ids,
    ready,
    spec_factory_for,
    unique_name,
    wait_for,
    wait_for_logs,
)

__all__ = [
    "SETTLE_TIMEOUT",
    "Leftovers",
    "ProviderContract",
    "SpecFactory",
    "by_instance",
    "collect_logs",
    "instance_ids",
    "ready",
    "spec_factory_for",
    "unique_name",
    "wait_for",
    "wait_for_logs",
]
