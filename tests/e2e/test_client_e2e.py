"""``AlphaswarmClient`` against the real server process on `local`, checked in the process table."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import (
    AlphaswarmClient,
    ConfigVersionConflict,
    DeploymentNotFound,
    InvalidArgument,
    ProviderNotFound,
)
from tests.e2e.processes import environ_of, marked
from tests.e2e.server_process import ServerProcess
from tests.waiting import until

MARKER = "ALPHASWARM_CLIENT_E2E"


async def test_lifecycle(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex

    def count() -> int:
        return len(marked(MARKER, tag))

    async with AlphaswarmClient(server.address, timeout=30.0) as client:
        providers = await client.list_providers()
        assert providers.default_provider == "local"

        status = await client.start_deployment(
            service_id="web", command=["sleep", "300"], replicas=2, env={MARKER: tag}
        )
        assert (status.provider, status.desired_replicas) == ("local", 2)
        await until(lambda: count() == 2, "2 replicas")
        # Not before the first call: the server's own start-up probe races a concurrent one
        # (both use the same probe file name in the local provider; reported to the lead).
        health = await client.check_health(provider="local")
        assert health.healthy
        assert health.details["running_replicas"] == "2"

        status = await client.scale_deployment("web", 3)
        assert status.desired_replicas == 3
        await until(lambda: count() == 3, "3 replicas")

        config = await client.apply_config("web", set={"MODE": "fast"})
        assert dict(config.data) == {"MODE": "fast"}
        assert (await client.get_config("web")).version == config.version
        await until(
            lambda: [environ_of(p).get("MODE") for p in marked(MARKER, tag)] == ["fast"] * 3,
            "every replica restarted with MODE=fast",
        )

        samples = client.stream_metrics("web", interval=0.5)
        async with contextlib.aclosing(samples):
            sample = await anext(samples)
        assert (sample.service_id, sample.ok) == ("web", True)
        assert sample.replicas >= 1

        for _ in range(150):
            status = await client.get_status("web")
            if status.ready_replicas == 3:
                break
            await asyncio.sleep(0.2)
        assert status.state == types_pb2.DEPLOYMENT_STATE_RUNNING
        assert len(status.instances) == 3
        pids = {int(i.instance_id.rsplit("@", 1)[1]) for i in status.instances}
        assert pids == {p.pid for p in marked(MARKER, tag)}

        listed = [d.service_id async for d in client.iter_deployments(page_size=1)]
        assert listed == ["web"]

        watch = client.watch("web")
        async with contextlib.aclosing(watch):
            first = await anext(watch)
        assert (first.service_id, first.desired_replicas) == ("web", 3)

        stopped = await client.stop_deployment("web")
        assert stopped.state == types_pb2.DEPLOYMENT_STATE_STOPPED
        await until(lambda: count() == 0, "no replica left")


async def test_errors_arrive_typed(server: ServerProcess) -> None:
    async with AlphaswarmClient(server.address, timeout=30.0) as client:
        with pytest.raises(ProviderNotFound) as unknown:
            await client.list_deployments(provider="nope")
        assert "local" in unknown.value.metadata["known_aliases"].split(",")

        with pytest.raises(InvalidArgument) as invalid:
            await client.start_deployment(service_id="Bad_Name", command=["sleep", "300"])
        assert [v.field for v in invalid.value.field_violations] == ["spec.service_id"]

        with pytest.raises(InvalidArgument) as image_only:
            await client.start_deployment(service_id="web", image="nginx")
        assert "spec.command" in [v.field for v in image_only.value.field_violations]

        with pytest.raises(DeploymentNotFound) as missing:
            await client.get_status("ghost")
        assert missing.value.resource is not None
        assert missing.value.resource.resource_name == "default/ghost"

        await client.start_deployment(service_id="web", command=["sleep", "300"], replicas=0)
        with pytest.raises(ConfigVersionConflict):
            await client.apply_config("web", set={"A": "1"}, expected_version="no-such-version")
        listed = await client.list_deployments()
        assert [d.service_id for d in listed.deployments] == ["web"]
        await client.stop_deployment("web")
