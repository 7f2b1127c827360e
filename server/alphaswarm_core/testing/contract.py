"""The provider-agnostic contract: one set of assertions every provider must pass.

A provider's test module subclasses ``ProviderContract``, sets
``expected_capabilities`` and supplies three fixtures; nothing else changes
between backends:

* ``provider``: an opened ``InfrastructureProvider`` talking to a real backend
  (or a real-protocol emulator), closed after the test.
* ``spec_factory``: ``(service_id, namespace, replicas, env) -> DeploymentSpec``
  that this backend can run (a command for ``local``, an image elsewhere).
* ``namespace``: a namespace no other test uses.

Backends converge asynchronously, so assertions about readiness poll
``status`` through ``wait_for`` with a generous bound instead of sleeping.
The tests are coroutines marked for pytest-asyncio, so they run in its strict
mode as well as in ``asyncio_mode = "auto"``.

Two more fixtures are needed by the optional capabilities, as methods of the
subclass (they override the base class's, which fail with instructions):

* ``leftovers`` (for ``delete``): ``async (service_id, namespace) -> list[str]``,
  what the *backend itself* still holds of the service (containers, objects,
  processes, parameters...), read without going through the provider.
* ``log_spec_factory`` (for ``logs``): a spec factory whose replicas write a line
  to stdout at least every second.
* ``failing_spec_factory`` (for ``revisions``): a spec factory whose replicas can
  never become ready on this backend (an image that cannot be pulled, a command
  that exits at once), so that a rollout of it FAILS.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import ClassVar, Protocol

import pytest

from alphaswarm_core.call import making_change
from alphaswarm_core.providers.protocol import (
    CapabilityUnsupported,
    ChangeRequest,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentEvent,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EventKind,
    InfrastructureProvider,
    LogEntry,
    LogQuery,
    Resources,
    RevisionConflict,
    RevisionNotFound,
    RolloutState,
)

SETTLE_TIMEOUT = 90.0
FAILING_ROLLOUT_DEADLINE = 15
"""The progress deadline (s) of the specs whose rollout must fail: a backend that does not
tell a failure apart (Kubernetes leaves a pod in ImagePullBackOff) fails it when this
passes, so it bounds those cases; the wait for the outcome allows SETTLE_TIMEOUT more."""
ROLLOUT_FAILURES = frozenset(
    {
        "IMAGE_PULL_FAILED",
        "CRASH_LOOP",
        "UNSCHEDULABLE",
        "PROGRESS_DEADLINE_EXCEEDED",
        "CONFIG_UNREADABLE",
        "BACKEND_QUOTA_EXCEEDED",
        "BACKEND_REJECTED",
    }
)
"""The reasons a failed rollout may give (ErrorReason names)."""


class SpecFactory(Protocol):
    def __call__(
        self,
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec: ...


def spec_factory_for(
    *,
    image: str = "",
    command: Sequence[str] = (),
    resources: Resources | None = None,
    **options: str,
) -> SpecFactory:
    """A ``spec_factory`` for the contract: every spec runs ``image`` (container backends) or
    ``command`` (``local``), with ``resources`` and ``provider_options`` as given."""

    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id=service_id,
            namespace=namespace,
            image=image,
            command=tuple(command),
            env=dict(env or {}),
            replicas=replicas,
            resources=resources or Resources(),
            provider_options=options,
        ).validate()

    return make


def unique_name(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_for(
    provider: InfrastructureProvider,
    service_id: str,
    namespace: str,
    predicate: Callable[[DeploymentStatus], bool],
    timeout: float = SETTLE_TIMEOUT,  # noqa: ASYNC109 - a polling bound, not a call timeout
) -> DeploymentStatus:
    """Poll ``status`` until ``predicate`` holds; fail with the last status seen."""
    deadline = time.monotonic() + timeout
    status = await provider.status(service_id, namespace=namespace)
    while not predicate(status):
        if time.monotonic() > deadline:
            pytest.fail(f"status never satisfied the condition within {timeout}s: {status}")
        await asyncio.sleep(0.2)
        status = await provider.status(service_id, namespace=namespace)
    return status


def ready(count: int) -> Callable[[DeploymentStatus], bool]:
    def check(status: DeploymentStatus) -> bool:
        return (
            status.desired_replicas == count
            and status.ready_replicas == count
            and status.state is (DeploymentState.RUNNING if count else DeploymentState.STOPPED)
        )

    return check


def instance_ids(status: DeploymentStatus) -> set[str]:
    return {instance.instance_id for instance in status.instances}


Leftovers = Callable[[str, str], Awaitable[list[str]]]
"""``(service_id, namespace) -> what the backend still holds of the service``."""


async def collect_logs(
    provider: InfrastructureProvider, service_id: str, namespace: str, query: LogQuery
) -> list[LogEntry]:
    """Every entry a non-following StreamLogs call sends (it must end by itself)."""
    stream = provider.stream_logs(service_id, query, namespace=namespace)
    async with asyncio.timeout(60):
        try:
            return [entry async for entry in stream]
        finally:
            await stream.aclose()


async def wait_for_logs(
    provider: InfrastructureProvider,
    service_id: str,
    namespace: str,
    predicate: Callable[[list[LogEntry]], bool],
    timeout: float = SETTLE_TIMEOUT,  # noqa: ASYNC109 - a polling bound, not a call timeout
) -> list[LogEntry]:
    """Read the retained logs until ``predicate`` holds; fail with what was seen."""
    deadline = time.monotonic() + timeout
    entries = await collect_logs(provider, service_id, namespace, LogQuery())
    while not predicate(entries):
        if time.monotonic() > deadline:
            pytest.fail(f"the logs never satisfied the condition within {timeout}s: {entries[-5:]}")
        await asyncio.sleep(0.5)
        entries = await collect_logs(provider, service_id, namespace, LogQuery())
    return entries


def by_instance(entries: Sequence[LogEntry]) -> dict[str, list[LogEntry]]:
    grouped: dict[str, list[LogEntry]] = {}
    for entry in entries:
        grouped.setdefault(entry.instance_id, []).append(entry)
    return grouped


class ProviderContract:
    """Subclass in a provider's test module; supply the fixtures named in the module doc.

    ``expected_capabilities`` is the exact set ``provider.capabilities()`` must report
    (the basics plus the optional ones the backend implements): a provider that
    silently loses ``config`` or ``metrics`` must fail, not skip those cases.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]
    expected_capabilities: frozenset[str] = frozenset()

    @pytest.fixture
    def leftovers(self) -> Leftovers:
        async def unknown(service_id: str, namespace: str) -> list[str]:
            pytest.fail(
                f"{type(self).__name__} implements delete: it must override the `leftovers` "
                "fixture with what the backend itself still holds of a service"
            )

        return unknown

    @pytest.fixture
    def failing_spec_factory(self) -> SpecFactory:
        return self._to_override(
            "revisions", "failing_spec_factory", "specs whose replicas never get ready"
        )

    @pytest.fixture
    def log_spec_factory(self) -> SpecFactory:
        return self._to_override(
            "logs", "log_spec_factory", "specs whose replicas write a line a second"
        )

    def _to_override(self, capability: str, fixture: str, what: str) -> SpecFactory:
        """A spec factory that fails the case naming the fixture the subclass must give."""

        def unknown(
            service_id: str,
            namespace: str,
            replicas: int = 1,
            env: Mapping[str, str] | None = None,
        ) -> DeploymentSpec:
            pytest.fail(
                f"{type(self).__name__} implements {capability}: it must override the "
                f"`{fixture}` fixture with {what}"
            )

        return unknown

    async def test_capabilities_are_exactly_the_declared_ones(
        self, provider: InfrastructureProvider
    ) -> None:
        assert self.expected_capabilities, (
            f"{type(self).__name__} must set expected_capabilities to the exact set "
            "this provider implements"
        )
        assert set(provider.capabilities()) == set(self.expected_capabilities)

    async def test_health_reports_alias_and_kind(self, provider: InfrastructureProvider) -> None:
        health = await provider.health()
        assert health.healthy, health.message
        assert health.alias == provider.provider_alias
        kind = getattr(provider.provider_kind, "value", provider.provider_kind)
        assert health.kind == kind

    async def test_start_reaches_desired_replicas(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        status = await provider.start(spec_factory(service, namespace, replicas=2))
        assert (status.service_id, status.namespace) == (service, namespace)
        assert status.provider == provider.provider_alias
        assert status.desired_replicas == 2
        settled = await wait_for(provider, service, namespace, ready(2))
        assert len(settled.instances) == 2
        assert all(instance.ready for instance in settled.instances)

    async def test_start_twice_changes_nothing(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        spec = spec_factory(service, namespace, replicas=2)
        await provider.start(spec)
        first = await wait_for(provider, service, namespace, ready(2))
        await provider.start(spec)
        second = await wait_for(provider, service, namespace, ready(2))
        assert instance_ids(second) == instance_ids(first)

    async def test_start_with_changed_spec_replaces_replicas(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=1, env={"MODE": "a"}))
        first = await wait_for(provider, service, namespace, ready(1))
        await provider.start(spec_factory(service, namespace, replicas=1, env={"MODE": "b"}))

        def replaced(status: DeploymentStatus) -> bool:
            ids = instance_ids(status)
            return ready(1)(status) and bool(ids) and not ids & instance_ids(first)

        await wait_for(provider, service, namespace, replaced)

    async def test_scale_up_down_and_to_zero(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=1))
        await wait_for(provider, service, namespace, ready(1))

        scaled = await provider.scale(service, 3, namespace=namespace)
        assert scaled.desired_replicas == 3
        three = await wait_for(provider, service, namespace, ready(3))

        await provider.scale(service, 3, namespace=namespace)
        same = await wait_for(provider, service, namespace, ready(3))
        assert instance_ids(same) == instance_ids(three), "scale to the current count is a no-op"

        await provider.scale(service, 2, namespace=namespace)
        await wait_for(provider, service, namespace, ready(2))

        zero = await provider.scale(service, 0, namespace=namespace)
        assert zero.desired_replicas == 0
        await wait_for(provider, service, namespace, ready(0))
        listed = await provider.list_deployments(namespace=namespace)
        assert service in {s.service_id for s in listed}, "scale to 0 keeps the definition"

        await provider.scale(service, 1, namespace=namespace)
        await wait_for(provider, service, namespace, ready(1))

    async def test_stop_is_idempotent_and_keeps_definition(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=2))
        await wait_for(provider, service, namespace, ready(2))

        stopped = await provider.stop(service, namespace=namespace)
        assert stopped.state is DeploymentState.STOPPED
        again = await provider.stop(service, namespace=namespace)
        assert again.state is DeploymentState.STOPPED
        status = await wait_for(provider, service, namespace, ready(0))
        assert status.ready_replicas == 0

        await provider.start(spec_factory(service, namespace, replicas=1))
        await wait_for(provider, service, namespace, ready(1))

    async def test_unknown_service_is_not_found(
        self, provider: InfrastructureProvider, namespace: str
    ) -> None:
        missing = unique_name("missing")
        with pytest.raises(DeploymentNotFoundError):
            await provider.status(missing, namespace=namespace)
        with pytest.raises(DeploymentNotFoundError):
            await provider.stop(missing, namespace=namespace)
        with pytest.raises(DeploymentNotFoundError):
            await provider.scale(missing, 2, namespace=namespace)
        with pytest.raises(DeploymentNotFoundError):
            await provider.status(missing, namespace=namespace)

    async def test_list_is_scoped_to_namespace(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        other_namespace = unique_name("ns")
        first, second, elsewhere = unique_name(), unique_name(), unique_name()
        await provider.start(spec_factory(first, namespace, replicas=1))
        await provider.start(spec_factory(second, namespace, replicas=1))
        await provider.start(spec_factory(elsewhere, other_namespace, replicas=1))
        try:
            listed = await provider.list_deployments(namespace=namespace)
            names = {(s.namespace, s.service_id) for s in listed}
            assert {(namespace, first), (namespace, second)} <= names
            assert all(s.namespace == namespace for s in listed)
            everywhere = {(s.namespace, s.service_id) for s in await provider.list_deployments()}
            assert (other_namespace, elsewhere) in everywhere
        finally:  # the other namespace is not the fixture's: nothing else removes it
            await provider.stop(elsewhere, namespace=other_namespace)
            if "delete" in provider.capabilities():
                await provider.delete(elsewhere, namespace=other_namespace)

    async def test_config_versions_and_conflicts(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=1))
        if "config" not in provider.capabilities():
            with pytest.raises(CapabilityUnsupported):
                await provider.get_config(service, namespace=namespace)
            return
        initial = await provider.get_config(service, namespace=namespace)
        assert initial.service_id == service

        applied = await provider.apply_config(
            ConfigMapPatch(
                service,
                namespace,
                set={"GREETING": "hello", "LEVEL": "1"},
                expected_version=initial.version,
            )
        )
        assert applied.data["GREETING"] == "hello"
        assert applied.version != initial.version

        with pytest.raises(ConfigVersionConflict):
            await provider.apply_config(
                ConfigMapPatch(
                    service, namespace, set={"GREETING": "stale"}, expected_version=initial.version
                )
            )
        current = await provider.get_config(service, namespace=namespace)
        assert current.data["GREETING"] == "hello", "a conflicting patch changes nothing"
        assert current.version == applied.version

        removed = await provider.apply_config(ConfigMapPatch(service, namespace, remove=("LEVEL",)))
        assert "LEVEL" not in removed.data
        assert removed.data["GREETING"] == "hello"
        await wait_for(provider, service, namespace, ready(1))

    async def test_unknown_service_config_is_not_found(
        self, provider: InfrastructureProvider, namespace: str
    ) -> None:
        expected = (
            DeploymentNotFoundError
            if "config" in provider.capabilities()
            else CapabilityUnsupported
        )
        with pytest.raises(expected):
            await provider.get_config(unique_name("missing"), namespace=namespace)

    async def test_unknown_service_metrics_is_not_found(
        self, provider: InfrastructureProvider, namespace: str
    ) -> None:
        missing = unique_name("missing")
        expected = (
            DeploymentNotFoundError
            if "metrics" in provider.capabilities()
            else CapabilityUnsupported
        )
        # Calling a stream does nothing; every error comes with the first anext.
        stream = provider.stream_metrics(missing, namespace=namespace, interval_seconds=0.2)
        try:
            with pytest.raises(expected):
                async with asyncio.timeout(30):
                    await anext(stream)
        finally:
            await stream.aclose()

    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=2))
        await wait_for(provider, service, namespace, ready(2))
        stream = provider.stream_metrics(service, namespace=namespace, interval_seconds=0.2)
        if "metrics" not in provider.capabilities():
            with pytest.raises(CapabilityUnsupported):
                await anext(stream)
            return
        samples = []
        try:
            async with asyncio.timeout(60):
                async for sample in stream:
                    samples.append(sample)
                    if len(samples) == 3:
                        break
        finally:
            await stream.aclose()
        assert [s.service_id for s in samples] == [service] * 3
        assert all(s.provider == provider.provider_alias for s in samples)
        assert samples[-1].ok, samples[-1].error
        assert samples[-1].replicas == 2
        assert samples[-1].memory_bytes > 0
        assert samples[0].timestamp <= samples[-1].timestamp

    async def test_watch_yields_current_then_changes(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=1))
        await wait_for(provider, service, namespace, ready(1))
        watch = provider.watch(service, namespace=namespace, interval_seconds=0.2)
        try:
            async with asyncio.timeout(60):
                first = await anext(watch)
                assert first.service_id == service and first.ready_replicas == 1
                await provider.scale(service, 2, namespace=namespace)
                async for status in watch:
                    if status.desired_replicas == 2:
                        break
        finally:
            await watch.aclose()

    # -- delete -----------------------------------------------------------------------------

    async def test_delete_removes_everything_and_then_is_not_found(
        self,
        provider: InfrastructureProvider,
        spec_factory: SpecFactory,
        namespace: str,
        leftovers: Leftovers,
    ) -> None:
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=2))
        if "delete" not in provider.capabilities():
            with pytest.raises(CapabilityUnsupported):
                await provider.delete(service, namespace=namespace)
            return
        await wait_for(provider, service, namespace, ready(2))
        if "config" in provider.capabilities():
            await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "v"}))
        assert await provider.delete(service, namespace=namespace) is True
        with pytest.raises(DeploymentNotFoundError):
            await provider.status(service, namespace=namespace)
        if "config" in provider.capabilities():
            with pytest.raises(DeploymentNotFoundError):
                await provider.get_config(service, namespace=namespace)
        listed = await provider.list_deployments(namespace=namespace)
        assert service not in {s.service_id for s in listed}
        with pytest.raises(DeploymentNotFoundError):
            await provider.delete(service, namespace=namespace)
        assert await provider.delete(service, namespace=namespace, allow_missing=True) is False
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while remaining := await leftovers(service, namespace):
            if time.monotonic() > deadline:
                pytest.fail(f"the backend still holds {remaining} of the deleted {service}")
            await asyncio.sleep(0.5)
        # The name is free again: a new service of that name starts from scratch.
        await provider.start(spec_factory(service, namespace, replicas=1))
        await wait_for(provider, service, namespace, ready(1))

    # -- logs -------------------------------------------------------------------------------

    async def test_logs_of_an_unknown_service_are_not_found(
        self, provider: InfrastructureProvider, namespace: str
    ) -> None:
        expected = (
            DeploymentNotFoundError if "logs" in provider.capabilities() else CapabilityUnsupported
        )
        stream = provider.stream_logs(unique_name("missing"), LogQuery(), namespace=namespace)
        try:
            with pytest.raises(expected):
                async with asyncio.timeout(30):
                    await anext(stream)
        finally:
            await stream.aclose()

    async def test_logs_tail_filters_and_ends(
        self, provider: InfrastructureProvider, log_spec_factory: SpecFactory, namespace: str
    ) -> None:
        if "logs" not in provider.capabilities():
            return  # the not-found case above checks that it is UNIMPLEMENTED
        service, other = unique_name(), unique_name()
        await provider.start(log_spec_factory(service, namespace, replicas=2))
        await provider.start(log_spec_factory(other, namespace, replicas=1))
        settled = await wait_for(provider, service, namespace, ready(2))
        replicas = instance_ids(settled)

        def two_each(entries: list[LogEntry]) -> bool:
            grouped = by_instance(entries)
            return set(grouped) >= replicas and all(len(grouped[i]) >= 2 for i in replicas)

        entries = await wait_for_logs(provider, service, namespace, two_each)
        others = instance_ids(await provider.status(other, namespace=namespace))
        assert not {e.instance_id for e in entries} & others, "logs never mix services"
        for lines in by_instance(entries).values():
            times = [e.time for e in lines]
            assert times == sorted(times), "one replica's lines come in order"
            assert all("\n" not in e.text for e in lines)

        last = await collect_logs(provider, service, namespace, LogQuery(tail_lines=1))
        grouped = by_instance(last)
        assert set(grouped) >= replicas and all(len(grouped[i]) == 1 for i in replicas)
        one = sorted(replicas)[0]
        only = await collect_logs(provider, service, namespace, LogQuery(instance_id=one))
        assert only and {e.instance_id for e in only} == {one}
        newest = max(e.time for e in entries)
        later = await collect_logs(provider, service, namespace, LogQuery(since=newest))
        assert all(e.time >= newest for e in later)

    async def test_logs_follow_new_lines_and_new_replicas(
        self, provider: InfrastructureProvider, log_spec_factory: SpecFactory, namespace: str
    ) -> None:
        if "logs" not in provider.capabilities():
            return
        service = unique_name()
        await provider.start(log_spec_factory(service, namespace, replicas=1))
        first = instance_ids(await wait_for(provider, service, namespace, ready(1)))
        await wait_for_logs(provider, service, namespace, bool)
        stream = provider.stream_logs(
            service, LogQuery(follow=True, tail_lines=1), namespace=namespace
        )
        seen: list[LogEntry] = []
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                async for entry in stream:  # the tail, then new lines as they are written
                    seen.append(entry)
                    if len(seen) == 3:
                        break
                await provider.scale(service, 2, namespace=namespace)
                async for entry in stream:  # a replica that appears later is followed too
                    seen.append(entry)
                    if entry.instance_id not in first:
                        break
        finally:
            await stream.aclose()
        assert {e.instance_id for e in seen} - first, "the new replica's lines arrived"

    # -- the namespace-wide watch -----------------------------------------------------------

    async def test_watch_deployments_snapshot_marker_then_changes(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        first, second = unique_name(), unique_name()
        await provider.start(spec_factory(first, namespace, replicas=1))
        await wait_for(provider, first, namespace, ready(1))
        watch = provider.watch_deployments(namespace=namespace, interval_seconds=0.2)
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                snapshot = []
                async for event in watch:
                    if event.kind is EventKind.SNAPSHOT_DONE:
                        break
                    assert event.kind is EventKind.ADDED and event.status is not None
                    assert event.status.namespace == namespace
                    snapshot.append(event.status.service_id)
                assert first in snapshot
                await provider.start(spec_factory(second, namespace, replicas=1))
                await _next_event(watch, EventKind.ADDED, second)
                await provider.scale(first, 2, namespace=namespace)
                await _next_event(watch, EventKind.MODIFIED, first)
                if "delete" in provider.capabilities():
                    await provider.delete(second, namespace=namespace)
                    await _next_event(watch, EventKind.DELETED, second)
        finally:
            await watch.aclose()

    # -- revisions and rollouts -------------------------------------------------------------

    async def test_revisions_number_changes_of_what_runs_not_scales(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        if "revisions" not in provider.capabilities():
            await provider.start(spec_factory(service, namespace))
            with pytest.raises(CapabilityUnsupported):
                await provider.list_revisions(service, namespace=namespace)
            return
        with making_change(ChangeRequest(change_cause="first")):
            first = await provider.start(spec_factory(service, namespace, env={"MODE": "a"}))
        assert first.revision == 1
        await rollout_succeeded(provider, service, namespace, 1)
        await provider.scale(service, 2, namespace=namespace)
        await provider.start(spec_factory(service, namespace, replicas=2, env={"MODE": "a"}))
        assert (await provider.status(service, namespace=namespace)).revision == 1, (
            "a scale, and a start that changes nothing, make no revision"
        )
        if "config" in provider.capabilities():
            with making_change(ChangeRequest(change_cause="config")):
                await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "v"}))
            await rollout_succeeded(provider, service, namespace, 2)
        with making_change(ChangeRequest(change_cause="mode b")):
            changed = await provider.start(
                spec_factory(service, namespace, replicas=2, env={"MODE": "b"})
            )
        latest = changed.revision
        assert latest == (3 if "config" in provider.capabilities() else 2)
        await rollout_succeeded(provider, service, namespace, latest)
        history = await provider.list_revisions(service, namespace=namespace)
        assert [r.number for r in history] == list(range(latest, 0, -1)), "newest first"
        assert history[0].change_cause == "mode b" and history[-1].change_cause == "first"
        assert history[0].spec.env["MODE"] == "b" and history[-1].spec.env["MODE"] == "a"

    async def test_rollback_restores_an_earlier_spec_and_config(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        if "revisions" not in provider.capabilities():
            return  # the numbering case checks that it is UNIMPLEMENTED
        service = unique_name()
        config = "config" in provider.capabilities()
        await provider.start(spec_factory(service, namespace, env={"MODE": "a"}))
        await rollout_succeeded(provider, service, namespace, 1)
        if config:
            await provider.apply_config(ConfigMapPatch(service, namespace, set={"LEVEL": "2"}))
        changed = await provider.start(spec_factory(service, namespace, env={"MODE": "b"}))
        await rollout_succeeded(provider, service, namespace, changed.revision)
        rolled = await provider.rollback(service, 1, namespace=namespace)
        assert rolled.revision == changed.revision + 1, "a rollback is a new revision"
        await rollout_succeeded(provider, service, namespace, rolled.revision)
        newest = (await provider.list_revisions(service, namespace=namespace))[0]
        assert (newest.number, newest.rollback_of, newest.automatic) == (rolled.revision, 1, False)
        assert newest.spec.env["MODE"] == "a"
        now = await provider.definition(service, namespace=namespace)
        assert now.spec.env["MODE"] == "a" and now.revision == rolled.revision
        if config:
            assert "LEVEL" not in now.config, "the config of revision 1 came back too"
        with pytest.raises(RevisionNotFound):
            await provider.rollback(service, 999, namespace=namespace)

    async def test_expected_revision_is_check_and_set(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        if "revisions" not in provider.capabilities():
            return
        service = unique_name()
        with making_change(ChangeRequest(expected_revision=-1)):
            await provider.start(spec_factory(service, namespace, env={"MODE": "a"}))
            with pytest.raises(RevisionConflict):  # it exists now
                await provider.start(spec_factory(service, namespace, env={"MODE": "x"}))
        with making_change(ChangeRequest(expected_revision=7)), pytest.raises(RevisionConflict):
            await provider.start(spec_factory(service, namespace, env={"MODE": "x"}))
        with making_change(ChangeRequest(expected_revision=7)), pytest.raises(RevisionConflict):
            await provider.scale(service, 3, namespace=namespace)
        now = await provider.definition(service, namespace=namespace)
        assert (now.revision, now.spec.env["MODE"], now.spec.replicas) == (1, "a", 1), (
            "a stale change changes nothing"
        )
        with making_change(ChangeRequest(expected_revision=1)):
            changed = await provider.start(spec_factory(service, namespace, env={"MODE": "b"}))
        assert changed.revision == 2

    async def test_a_failing_rollout_is_failed_with_a_reason(
        self,
        provider: InfrastructureProvider,
        spec_factory: SpecFactory,
        failing_spec_factory: SpecFactory,
        namespace: str,
    ) -> None:
        if "revisions" not in provider.capabilities():
            return
        service = unique_name()
        await provider.start(spec_factory(service, namespace))
        await rollout_succeeded(provider, service, namespace, 1)
        failing = replace(
            failing_spec_factory(service, namespace),
            progress_deadline_seconds=FAILING_ROLLOUT_DEADLINE,
        )
        await provider.start(failing)
        status = await wait_for(provider, service, namespace, rollout_done(2))
        assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
        assert status.rollout.reason in ROLLOUT_FAILURES, status.rollout
        assert status.observed_revision == 1, "the replicas still run revision 1 (or none)"

    async def test_auto_rollback_goes_back_to_the_last_good_revision(
        self,
        provider: InfrastructureProvider,
        spec_factory: SpecFactory,
        failing_spec_factory: SpecFactory,
        namespace: str,
    ) -> None:
        if "revisions" not in provider.capabilities():
            return
        service = unique_name()
        await provider.start(spec_factory(service, namespace, env={"MODE": "good"}))
        await rollout_succeeded(provider, service, namespace, 1)
        failing = replace(
            failing_spec_factory(service, namespace),
            progress_deadline_seconds=FAILING_ROLLOUT_DEADLINE,
            auto_rollback=True,
        )
        await provider.start(failing)
        status = await wait_for(
            provider,
            service,
            namespace,
            lambda s: s.revision == 3 and s.rollout is not None and s.rollout.done,
        )
        assert status.rollout is not None and status.rollout.state is RolloutState.SUCCEEDED
        newest = (await provider.list_revisions(service, namespace=namespace))[0]
        assert (newest.number, newest.rollback_of, newest.automatic) == (3, 1, True)
        assert newest.spec.env["MODE"] == "good"


async def _next_event(
    watch: AsyncGenerator[DeploymentEvent, None], kind: EventKind, service_id: str
) -> None:
    """Read ``watch`` until ``kind`` of ``service_id`` comes (the caller bounds the time)."""
    async for event in watch:
        if event.kind is kind and event.status and event.status.service_id == service_id:
            return
    pytest.fail(f"the watch ended before {kind} of {service_id}")


# -- revisions and rollouts ------------------------------------------------------------------


def rollout_done(revision: int) -> Callable[[DeploymentStatus], bool]:
    """The rollout of ``revision`` ended (succeeded or failed)."""

    def check(status: DeploymentStatus) -> bool:
        return status.revision == revision and status.rollout is not None and status.rollout.done

    return check


async def rollout_succeeded(
    provider: InfrastructureProvider, service: str, namespace: str, revision: int
) -> DeploymentStatus:
    """Wait until ``revision``'s rollout ended; it must have succeeded onto every replica."""
    status = await wait_for(provider, service, namespace, rollout_done(revision))
    assert status.rollout is not None and status.rollout.state is RolloutState.SUCCEEDED, status
    assert status.observed_revision == revision
    return status
