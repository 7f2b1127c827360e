"""The provider-agnostic contract suite, unchanged, against real processes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from alphaswarm_core.providers.protocol import DeploymentSpec
from alphaswarm_core.testing import Leftovers, ProviderContract, SpecFactory

from .support import CRASHER, TALKER, command_spec, machine_leftovers


class TestLocalContract(ProviderContract):
    expected_capabilities = frozenset(
        {
            "start",
            "stop",
            "scale",
            "status",
            "list",
            "config",
            "metrics",
            "logs",
            "delete",
            "revisions",
        }
    )

    @pytest.fixture
    def leftovers(self, tmp_path: Path) -> Leftovers:
        """Processes with the service's markers, its cgroups, its rows, its log files."""

        async def still(service_id: str, namespace: str) -> list[str]:
            return machine_leftovers(tmp_path / "state", service_id, namespace)

        return still

    @pytest.fixture
    def log_spec_factory(self, local_marker: str) -> SpecFactory:
        def make(
            service_id: str,
            namespace: str,
            replicas: int = 1,
            env: Mapping[str, str] | None = None,
        ) -> DeploymentSpec:
            return command_spec(
                service_id, namespace, local_marker, TALKER, replicas=replicas, env=env
            )

        return make

    @pytest.fixture
    def failing_spec_factory(self, local_marker: str) -> SpecFactory:
        """A command that exits at once: its rollout FAILS with CRASH_LOOP."""

        def make(
            service_id: str,
            namespace: str,
            replicas: int = 1,
            env: Mapping[str, str] | None = None,
        ) -> DeploymentSpec:
            return command_spec(
                service_id, namespace, local_marker, CRASHER, replicas=replicas, env=env
            )

        return make
