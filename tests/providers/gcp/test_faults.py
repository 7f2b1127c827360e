"""Throttling and 5xx: the provider retries what is transient, and every loop is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider
from alphaswarm_controller.providers.gcp.retry import MAX_ATTEMPTS
from alphaswarm_core.providers.protocol import (
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentState,
)
from alphaswarm_core.testing import SpecFactory
from tests.fakes.faults import Kind
from tests.fakes.gcp_server import GcpEmulator

from .conftest import REGION, with_background_faults


async def test_persistent_throttling_gives_up_after_a_bounded_number_of_requests(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("hot", namespace))
    emulator.faults.clear()
    before = emulator.faults.count("run:GetService")
    emulator.faults.inject("run:GetService", Kind.THROTTLED, times=0)
    with pytest.raises(BackendUnavailableError) as caught:
        await cloud_run.status("hot", namespace=namespace)
    assert (caught.value.code, caught.value.reason) == ("UNAVAILABLE", "BACKEND_THROTTLED")
    assert emulator.faults.count("run:GetService") - before == MAX_ATTEMPTS


async def test_persistent_unavailability_gives_up_after_a_bounded_number_of_requests(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    emulator.faults.clear()
    emulator.faults.inject("run:CreateService", Kind.UNAVAILABLE, times=0)
    with pytest.raises(BackendUnavailableError) as caught:
        await cloud_run.start(cloud_run_specs("down", namespace))
    assert caught.value.reason == "BACKEND_UNAVAILABLE"
    assert emulator.faults.count("run:CreateService") == MAX_ATTEMPTS
    assert emulator.run.services == {}


async def _lifecycle(env: dict[str, str], specs: SpecFactory, namespace: str) -> None:
    provider = CloudRunProvider(env=env)
    try:
        await provider.start(specs("life", namespace, replicas=2))
        await provider.scale("life", 3, namespace=namespace)
        config = await provider.apply_config(ConfigMapPatch("life", namespace, set={"K": "v"}))
        assert config.version == "1"
        assert len(await provider.list_deployments(namespace=namespace)) == 1
        stopped = await provider.stop("life", namespace=namespace)
        assert stopped.state is DeploymentState.STOPPED
    finally:
        await provider.close()


async def test_a_lifecycle_under_background_faults_costs_a_bounded_number_of_requests(
    service_account_key: Path, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    counts = []
    for faulty in (False, True):
        with GcpEmulator() as emulator:
            if faulty:
                with_background_faults(emulator)
            env = {
                "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_key),
                "ALPHASWARM_GCP_REGION": REGION,
                "ALPHASWARM_GCP_API_ENDPOINT": emulator.address,
                "ALPHASWARM_GCP_POLL_INTERVAL": "0.02",
            }
            await _lifecycle(env, cloud_run_specs, namespace)
            counts.append(emulator.faults.count())
            if faulty:
                assert sum(emulator.faults.failed.values()) > 0, "faults were injected"
    calm, faulty_count = counts
    # About a quarter of all requests fail and are retried once or twice; polling varies
    # with timing, hence the margin. A retry loop that spun would blow far past it.
    assert faulty_count <= 2 * calm + 20, counts
