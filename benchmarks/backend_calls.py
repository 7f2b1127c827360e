"""Backend calls per RPC for the `local` and `docker_compose` providers.

Every blocking backend call a provider makes goes through its bounded runner
(``run_blocking``), so a counting runner counts them: Engine API requests for
`docker_compose`; for `local`, psutil/signal work plus its SQLite transactions
(which run on a thread of their own). Process spawns are not counted. The figure that matters is
ListDeployments: its cost must not grow with the number of services (the
baseline is the same list with a third of the services).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.models import ConfigMapPatch, DeploymentSpec
from alphaswarm_core.providers.protocol import InfrastructureProvider

P = ParamSpec("P")
T = TypeVar("T")


class CountingRunner(BlockingRunner):
    def __init__(self) -> None:
        super().__init__(16)
        self.calls = 0

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.calls += 1
        return await super().run(fn, *args, **kwargs)


async def _count(runner: CountingRunner, operation: Any) -> int:
    before = runner.calls
    await operation
    return runner.calls - before


async def measure(
    provider: InfrastructureProvider,
    runner: CountingRunner,
    spec: Callable[[str, str, int], DeploymentSpec],
    few: int,
) -> dict[str, int]:
    ns = f"calls-{uuid.uuid4().hex[:6]}"
    counts: dict[str, int] = {}
    try:
        for index in range(few):
            await provider.start(spec(f"s{index}", ns, 1))
        counts["StartDeployment (new, 1 replica)"] = await _count(
            runner, provider.start(spec("probe", ns, 1))
        )
        counts["StartDeployment (no change)"] = await _count(
            runner, provider.start(spec("probe", ns, 1))
        )
        counts["GetDeploymentStatus"] = await _count(runner, provider.status("probe", namespace=ns))
        counts["ScaleDeployment (1 -> 2)"] = await _count(
            runner, provider.scale("probe", 2, namespace=ns)
        )
        counts["ScaleDeployment (no change)"] = await _count(
            runner, provider.scale("probe", 2, namespace=ns)
        )
        counts["GetServiceConfig"] = await _count(
            runner, provider.get_config("probe", namespace=ns)
        )
        counts["ApplyConfig (2 replicas roll)"] = await _count(
            runner, provider.apply_config(ConfigMapPatch("probe", ns, set={"K": "v"}))
        )
        counts[f"ListDeployments ({few + 1} services)"] = await _count(
            runner, provider.list_deployments(namespace=ns)
        )
        for index in range(few, 3 * few + 2):
            await provider.start(spec(f"s{index}", ns, 1))
        counts[f"ListDeployments ({3 * few + 3} services)"] = await _count(
            runner, provider.list_deployments(namespace=ns)
        )
        counts["StopDeployment (2 replicas)"] = await _count(
            runner, provider.stop("probe", namespace=ns)
        )
    finally:
        for item in await provider.list_deployments(namespace=ns):
            await provider.stop(item.service_id, namespace=ns)
    return counts


def local_counts(few: int) -> dict[str, int]:
    from alphaswarm_controller.providers.local import LocalProvider

    async def go() -> dict[str, int]:
        runner = CountingRunner()
        with tempfile.TemporaryDirectory() as state:
            provider = LocalProvider(env={"ALPHASWARM_CP_STATE_DIR": state}, runner=runner)
            await provider.open()
            _count_store_transactions(provider, runner)
            try:
                return await measure(
                    provider,
                    runner,
                    lambda sid, ns, n: DeploymentSpec(
                        sid, ns, command=("sleep", "300"), replicas=n
                    ),
                    few,
                )
            finally:
                await provider.close()

    return asyncio.run(go())


def _count_store_transactions(provider: Any, runner: CountingRunner) -> None:
    """`local` keeps SQLite on a thread of its own: count its transactions as backend calls."""
    store = provider._store
    inner = store._call

    async def counted(fn: Any) -> Any:
        runner.calls += 1
        return await inner(fn)

    store._call = counted


def docker_counts(few: int) -> dict[str, int]:
    import docker

    from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
    from tests.fakes.docker_images import IDLE_COMMAND, ensure_busybox_image

    host = os.environ.get("DOCKER_HOST")
    if not host:
        raise SystemExit("DOCKER_HOST must point at a Docker engine (scripts/ci/start-dockerd.sh)")
    image = ensure_busybox_image(docker.APIClient(base_url=host))

    async def go() -> dict[str, int]:
        runner = CountingRunner()
        provider = DockerComposeProvider(env={"DOCKER_HOST": host}, runner=runner)
        await provider.open()
        try:
            return await measure(
                provider,
                runner,
                lambda sid, ns, n: DeploymentSpec(
                    sid, ns, image=image, command=("/bin/sh", "-c", IDLE_COMMAND), replicas=n
                ),
                few,
            )
        finally:
            await provider.close()

    return asyncio.run(go())
