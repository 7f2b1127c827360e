"""ServiceLocks: one change of a service at a time, reentrant, nothing kept after."""

from __future__ import annotations

import asyncio

from alphaswarm_core.providers.models import ConfigMapPatch, DeploymentSpec
from alphaswarm_core.providers.service_locks import ServiceLocks, one_change_at_a_time


class Recorder:
    def __init__(self) -> None:
        self.service_locks = ServiceLocks()
        self.events: list[str] = []
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    @one_change_at_a_time
    async def start(self, spec: DeploymentSpec) -> None:
        self.events.append(f"start {spec.namespace}/{spec.service_id}")
        self.entered.set()
        await self.gate.wait()
        await self.scale(spec.service_id, 2, namespace=spec.namespace)  # re-enters
        self.events.append("start done")

    @one_change_at_a_time
    async def scale(self, service_id: str, replicas: int, *, namespace: str = "default") -> None:
        self.events.append(f"scale {namespace}/{service_id}")

    @one_change_at_a_time
    async def apply_config(self, patch: ConfigMapPatch) -> None:
        self.events.append(f"config {patch.namespace}/{patch.service_id}")


async def test_changes_of_one_service_wait_and_others_do_not() -> None:
    provider = Recorder()
    first = asyncio.create_task(provider.start(DeploymentSpec("web", "a", image="i:1")))
    await provider.entered.wait()
    same = asyncio.create_task(provider.apply_config(ConfigMapPatch("web", "a", set={"K": "v"})))
    await provider.scale("web", 3, namespace="b")  # another namespace: not held up
    await provider.scale("api", 3, namespace="a")  # another service: not held up
    for _ in range(20):  # the waiter has had every chance to run
        await asyncio.sleep(0)
    assert provider.events == ["start a/web", "scale b/web", "scale a/api"]
    assert not same.done(), "the same service's change waits"

    provider.gate.set()
    await asyncio.gather(first, same)
    assert provider.events[3:] == ["scale a/web", "start done", "config a/web"]
    assert len(provider.service_locks) == 0


async def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    provider = Recorder()
    first = asyncio.create_task(provider.start(DeploymentSpec("web", "a", image="i:1")))
    await provider.entered.wait()
    waiter = asyncio.create_task(provider.scale("web", 1, namespace="a"))
    await asyncio.sleep(0)
    waiter.cancel()
    provider.gate.set()
    await first
    assert waiter.cancelled()
    assert len(provider.service_locks) == 0
