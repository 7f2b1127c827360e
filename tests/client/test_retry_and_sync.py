"""Retries of what is safe to repeat, request ids on errors, and the blocking client."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from alphaswarm_client import (
    NO_RETRY,
    AlphaswarmClient,
    DeploymentNotFound,
    ResourceExhausted,
    RetryPolicy,
    SyncAlphaswarmClient,
    Unavailable,
)
from alphaswarm_client.errors import AlphaswarmError
from alphaswarm_client.retry import SAFE_TO_REPEAT
from alphaswarm_core.providers.errors import BackendQuotaExceeded, BackendUnavailableError
from tests.client.conftest import InProcess

FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05)


def test_the_proto_decides_what_is_safe_to_repeat() -> None:
    assert {"GetDeploymentStatus", "ListDeployments", "StartDeployment", "ScaleDeployment"} <= (
        SAFE_TO_REPEAT
    )
    assert "ApplyConfig" not in SAFE_TO_REPEAT  # not idempotent: never repeated by default


def test_waits_grow_with_jitter_and_honour_retry_info() -> None:
    unavailable = AlphaswarmError(grpc.StatusCode.UNAVAILABLE, "x")
    policy = RetryPolicy(attempts=10, initial=0.1, maximum=1.0)
    waits = [policy.wait(attempt, unavailable) for attempt in range(1, 10)]
    assert all(w is not None and 0 <= w <= 1.0 for w in waits)
    assert policy.wait(10, unavailable) is None, "attempts are bounded"
    told = AlphaswarmError(grpc.StatusCode.UNAVAILABLE, "x", retry_delay=2.5)
    assert policy.wait(1, told) == 2.5, "never sooner than the server asked"
    quota = AlphaswarmError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x")
    assert policy.wait(1, quota) is None, "RESOURCE_EXHAUSTED only with RetryInfo"
    later = AlphaswarmError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", retry_delay=0.2)
    assert policy.wait(1, later) == pytest.approx(0.2, abs=0.1)
    assert policy.wait(1, AlphaswarmError(grpc.StatusCode.INTERNAL, "x")) is None


async def test_reads_are_retried_on_unavailable(inproc: InProcess) -> None:
    memory = await inproc.memory()
    await inproc.client.start_deployment(service_id="web", command=["sleep", "1"])
    memory.calls.clear()
    memory.repeated_failures["status"] = [
        BackendUnavailableError("blip", retry_after_seconds=0.01) for _ in range(2)
    ]
    async with AlphaswarmClient(inproc.target, timeout=10, retry=FAST) as client:
        status = await client.get_status("web")
    assert status.service_id == "web"
    assert memory.calls.count("status") == 3


async def test_retries_stop_at_the_attempt_bound_and_raise_the_last_error(
    inproc: InProcess,
) -> None:
    memory = await inproc.memory()
    memory.repeated_failures["status"] = [
        BackendUnavailableError("down", retry_after_seconds=0.01) for _ in range(10)
    ]
    async with AlphaswarmClient(inproc.target, timeout=10, retry=FAST) as client:
        with pytest.raises(Unavailable):
            await client.get_status("web")
    assert memory.calls.count("status") == FAST.attempts


async def test_calls_not_safe_to_repeat_and_policy_off_are_tried_once(inproc: InProcess) -> None:
    memory = await inproc.memory()
    await inproc.client.start_deployment(service_id="web", command=["sleep", "1"])
    memory.calls.clear()
    memory.repeated_failures["apply_config"] = [BackendUnavailableError("blip")]
    async with AlphaswarmClient(inproc.target, timeout=10, retry=FAST) as client:
        with pytest.raises(Unavailable):
            await client.apply_config("web", set={"A": "1"})
        assert memory.calls.count("apply_config") == 1
        memory.repeated_failures["status"] = [BackendQuotaExceeded("no quota")]
        with pytest.raises(ResourceExhausted):  # no RetryInfo: not retried
            await client.get_status("web")
        assert memory.calls.count("status") == 1
    memory.repeated_failures["status"] = [BackendUnavailableError("blip")]
    async with AlphaswarmClient(inproc.target, timeout=10, retry=NO_RETRY) as client:
        with pytest.raises(Unavailable):
            await client.get_status("web")
    assert memory.calls.count("status") == 2


async def test_an_unreachable_server_is_retried_within_one_deadline() -> None:
    async with AlphaswarmClient("127.0.0.1:1", timeout=1.0, retry=FAST) as client:
        with pytest.raises(Unavailable):
            await client.list_providers()


async def test_errors_carry_the_request_id(inproc: InProcess) -> None:
    with pytest.raises(DeploymentNotFound) as caught:
        await inproc.client.get_status("ghost")
    assert len(caught.value.request_id) == 32
    assert caught.value.request_id in caught.value.one_line()


async def test_the_blocking_client_has_the_same_methods(inproc: InProcess) -> None:
    def blocking_calls() -> None:
        with SyncAlphaswarmClient(inproc.target, timeout=10) as client:
            assert client.list_providers().default_provider == "memory"
            status = client.start_deployment(service_id="sync", command=["sleep", "1"], replicas=2)
            assert status.desired_replicas == 2
            assert [s.service_id for s in client.iter_deployments()] == ["sync"]
            with contextlib.closing(client.stream_metrics("sync", interval=0.1)) as samples:
                taken = [next(samples) for _ in range(3)]
            assert [s.replicas for s in taken] == [2, 2, 2]
            with pytest.raises(DeploymentNotFound):
                client.get_status("ghost")
            client.stop_deployment("sync")

    # The in-process server runs on this test's loop: the blocking client, in a thread.
    await asyncio.to_thread(blocking_calls)


async def test_logs_namespace_watch_and_delete_async_and_blocking(inproc: InProcess) -> None:
    """The README's sync example, on the in-process server: logs,
    a namespace watch and delete, through both clients."""
    client = inproc.client
    await client.start_deployment(service_id="talk", command=["sleep", "1"], replicas=2)
    await asyncio.sleep(0.35)  # the memory provider's replicas write a line every 0.1 s
    entries = [e async for e in client.stream_logs("talk", tail_lines=2)]
    per_replica = {e.instance_id for e in entries}
    assert len(per_replica) == 2 and len(entries) == 4  # the last 2 lines of each replica
    events = client.watch_deployments(namespace="default")
    async with contextlib.aclosing(events):
        first = [await anext(events), await anext(events)]
    assert [e.status.service_id for e in first] == ["talk", ""]
    assert first[1].event == 4  # DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE

    def blocking_calls() -> None:
        with SyncAlphaswarmClient(inproc.target, timeout=10) as sync:
            with contextlib.closing(sync.stream_logs("talk", tail_lines=1)) as lines:
                assert len(list(lines)) == 2
            with contextlib.closing(sync.watch_deployments(namespace="default")) as watch:
                assert next(watch).status.service_id == "talk"
            assert sync.delete_deployment("talk") is True
            with pytest.raises(DeploymentNotFound):
                sync.delete_deployment("talk")
            assert sync.delete_deployment("talk", allow_missing=True) is False

    await asyncio.to_thread(blocking_calls)
