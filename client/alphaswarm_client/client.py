"""An async client for ProviderService that speaks in proto messages and typed errors.

It adds only what every caller would otherwise repeat: channel lifetime, a
default provider and deadline, retries of what is safe to repeat, request
building from keyword arguments, paging, stream cancellation, and
``grpc.aio.AioRpcError`` turned into the exceptions of
:mod:`alphaswarm_client.errors`. :mod:`alphaswarm_client.sync` is the same client
for code without an event loop.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, cast

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc, types_pb2
from alphaswarm_client.errors import from_rpc_error
from alphaswarm_client.retry import DEFAULT_RETRY, RetryPolicy

Metadata = Sequence[tuple[str, str]]


class _Default(enum.Enum):
    TIMEOUT = enum.auto()


#: Use the client's default deadline (``None`` means no deadline at all).
DEFAULT_TIMEOUT: Final = _Default.TIMEOUT
Timeout = float | None | _Default

_SPEC_FIELDS = frozenset(types_pb2.DeploymentSpec.DESCRIPTOR.fields_by_name)


class AlphaswarmClient:
    """One channel to an alphaswarm server.

    ``timeout`` is the default deadline of unary calls in seconds, for all the
    attempts of a call together; streams have no deadline unless a call passes one.
    ``provider`` is the alias used when a call names none (empty: the server's
    default). ``retry`` says which failed calls are tried again (by default the
    reads and idempotent calls, on UNAVAILABLE, with backoff and jitter; see
    :mod:`alphaswarm_client.retry`). Use it as an async context manager, or call
    :meth:`close`.

    Streams are async generators: to stop one early and cancel the call at once
    (rather than when the generator is garbage-collected), iterate it inside
    ``contextlib.aclosing``.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Metadata = (),
        timeout: float | None = 30.0,
        provider: str = "",
        options: Sequence[tuple[str, Any]] = (),
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.provider = provider
        self.retry = retry
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._options = list(options)
        self._channel: grpc.aio.Channel | None = None
        self._stub: provider_service_pb2_grpc.ProviderServiceAsyncStub | None = None

    async def __aenter__(self) -> AlphaswarmClient:
        self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; open streams end with CANCELLED."""
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close(None)

    def _connect(self) -> provider_service_pb2_grpc.ProviderServiceAsyncStub:
        # The channel binds to the running event loop, so it is created on first use.
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            self._stub = provider_service_pb2_grpc.ProviderServiceStub(self._channel)
        assert self._stub is not None
        return self._stub

    def _timeout(self, timeout: Timeout, default: float | None) -> float | None:
        return default if isinstance(timeout, _Default) else timeout

    async def _call(self, rpc: str, request: Any, timeout: Timeout) -> Any:  # noqa: ASYNC109 - the gRPC deadline
        """One unary RPC, retried per ``self.retry`` within one deadline for all attempts."""
        method = getattr(self._connect(), rpc)
        budget = self._timeout(timeout, self.timeout)
        loop = asyncio.get_running_loop()
        deadline = None if budget is None else loop.time() + budget
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as raised:
                error = from_rpc_error(raised)
            wait = self.retry.wait(attempt, error) if rpc in self.retry.methods else None
            if wait is None or (deadline is not None and loop.time() + wait >= deadline):
                raise error from None
            await asyncio.sleep(wait)

    def _request(self, rpc: str, provider: str | None, **fields: Any) -> Any:
        """``<rpc>Request`` with the provider alias (the client's default unless given)."""
        alias = self.provider if provider is None else provider
        return getattr(pb, f"{rpc}Request")(provider=alias, **fields)

    async def _stream(
        self,
        rpc: str,
        request: Any,
        timeout: Timeout,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[Any, None]:
        method = getattr(self._connect(), rpc)
        call = method(request, timeout=self._timeout(timeout, None), metadata=self._metadata)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            # Runs when the caller stops iterating early too: the server sees the cancel
            # and releases the backend resources behind the stream.
            call.cancel()

    # -- unary RPCs ---------------------------------------------------------------------

    async def list_providers(
        self,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> pb.ListProvidersResponse:
        """Every registered provider and the server's default alias."""
        request = pb.ListProvidersRequest()
        response: pb.ListProvidersResponse = await self._call("ListProviders", request, timeout)
        return response

    async def check_health(
        self,
        *,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.ProviderHealth:
        """Probe one provider's credentials and connectivity."""
        request = self._request("CheckHealth", provider)
        response: pb.CheckHealthResponse = await self._call("CheckHealth", request, timeout)
        return response.health

    def _start_request(
        self,
        spec: types_pb2.DeploymentSpec | None,
        fields: Mapping[str, Any],
        provider: str | None,
        **change: Any,
    ) -> pb.StartDeploymentRequest:
        unknown = set(fields) - _SPEC_FIELDS
        if unknown:
            raise TypeError(f"unknown DeploymentSpec field(s): {', '.join(sorted(unknown))}")
        merged = types_pb2.DeploymentSpec()
        if spec is not None:
            merged.CopyFrom(spec)
        if fields:
            override = types_pb2.DeploymentSpec(**fields)
            for name in fields:
                merged.ClearField(cast(Any, name))
            merged.MergeFrom(override)
        request: pb.StartDeploymentRequest = self._request(
            "StartDeployment", provider, spec=merged, **change
        )
        return request

    async def start_deployment(
        self,
        spec: types_pb2.DeploymentSpec | None = None,
        /,
        *,
        expected_revision: int = 0,
        change_cause: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
        **fields: Any,
    ) -> types_pb2.DeploymentStatus:
        """Converge a service onto ``spec``, or onto a spec built from DeploymentSpec ``fields``.

        ``fields`` are DeploymentSpec field names (``service_id``, ``command``,
        ``replicas``, ``env``, ``ports=[{"container_port": 8080}]``, ...); given
        with ``spec`` they override its values. ``expected_revision`` (not 0) applies
        the change only if the service is still at that revision (-1: only if it does
        not exist), else raises RevisionConflict; ``change_cause`` is recorded in the
        history with the revision the change makes.
        """
        request = self._start_request(
            spec,
            fields,
            provider,
            expected_revision=expected_revision,
            change_cause=change_cause,
        )
        response: pb.StartDeploymentResponse = await self._call("StartDeployment", request, timeout)
        return response.status

    async def plan_start(
        self,
        spec: types_pb2.DeploymentSpec | None = None,
        /,
        *,
        expected_revision: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
        **fields: Any,
    ) -> pb.StartDeploymentResponse:
        """What ``start_deployment`` with the same arguments would do (``validate_only``):
        the response's ``plan``, and the current status (unset for a new service).
        Nothing changes."""
        request = self._start_request(
            spec, fields, provider, validate_only=True, expected_revision=expected_revision
        )
        response: pb.StartDeploymentResponse = await self._call("StartDeployment", request, timeout)
        return response

    async def stop_deployment(
        self,
        service_id: str,
        *,
        namespace: str = "",
        expected_revision: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.DeploymentStatus:
        """Stop every replica of a service; its definition stays."""
        request = self._request(
            "StopDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            expected_revision=expected_revision,
        )
        response: pb.StopDeploymentResponse = await self._call("StopDeployment", request, timeout)
        return response.status

    async def scale_deployment(
        self,
        service_id: str,
        replicas: int,
        *,
        namespace: str = "",
        expected_revision: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.DeploymentStatus:
        """Set a service's replica count (0 keeps the definition)."""
        request = self._request(
            "ScaleDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            replicas=replicas,
            expected_revision=expected_revision,
        )
        response: pb.ScaleDeploymentResponse = await self._call("ScaleDeployment", request, timeout)
        return response.status

    async def plan_scale(
        self,
        service_id: str,
        replicas: int,
        *,
        namespace: str = "",
        expected_revision: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> pb.ScaleDeploymentResponse:
        """What ``scale_deployment`` would do (``validate_only``); nothing changes."""
        request = self._request(
            "ScaleDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            replicas=replicas,
            validate_only=True,
            expected_revision=expected_revision,
        )
        response: pb.ScaleDeploymentResponse = await self._call("ScaleDeployment", request, timeout)
        return response

    async def get_status(
        self,
        service_id: str,
        *,
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.DeploymentStatus:
        """The observed state of one service."""
        request = self._request(
            "GetDeploymentStatus", provider, service_id=service_id, namespace=namespace
        )
        response: pb.GetDeploymentStatusResponse = await self._call(
            "GetDeploymentStatus", request, timeout
        )
        return response.status

    async def list_deployments(
        self,
        *,
        namespace: str = "",
        page_size: int = 0,
        page_token: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> pb.ListDeploymentsResponse:
        """One page of services (every namespace when ``namespace`` is empty)."""
        request = self._request(
            "ListDeployments",
            provider,
            namespace=namespace,
            page_size=page_size,
            page_token=page_token,
        )
        response: pb.ListDeploymentsResponse = await self._call("ListDeployments", request, timeout)
        return response

    async def iter_deployments(
        self,
        *,
        namespace: str = "",
        page_size: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[types_pb2.DeploymentStatus, None]:
        """Every service, following ``next_page_token`` to the last page (deadline per page)."""
        token = ""
        while True:
            page = await self.list_deployments(
                namespace=namespace,
                page_size=page_size,
                page_token=token,
                provider=provider,
                timeout=timeout,
            )
            for deployment in page.deployments:
                yield deployment
            token = page.next_page_token
            if not token:
                return

    async def get_config(
        self,
        service_id: str,
        *,
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.ServiceConfig:
        """A service's configuration data and its version."""
        request = self._request(
            "GetServiceConfig", provider, service_id=service_id, namespace=namespace
        )
        response: pb.GetServiceConfigResponse = await self._call(
            "GetServiceConfig", request, timeout
        )
        return response.config

    async def apply_config(
        self,
        service_id: str,
        *,
        set: Mapping[str, str] | None = None,
        remove: Iterable[str] = (),
        expected_version: str = "",
        expected_revision: int = 0,
        change_cause: str = "",
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.ServiceConfig:
        """Set and remove config keys; a stale ``expected_version`` raises ConfigVersionConflict,
        a stale ``expected_revision`` RevisionConflict."""
        request = self._config_request(
            service_id,
            set=set,
            remove=remove,
            expected_version=expected_version,
            namespace=namespace,
            provider=provider,
            expected_revision=expected_revision,
            change_cause=change_cause,
        )
        response: pb.ApplyConfigResponse = await self._call("ApplyConfig", request, timeout)
        return response.config

    async def plan_config(
        self,
        service_id: str,
        *,
        set: Mapping[str, str] | None = None,
        remove: Iterable[str] = (),
        expected_version: str = "",
        expected_revision: int = 0,
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> pb.ApplyConfigResponse:
        """What ``apply_config`` would do (``validate_only``): the plan (secret values
        masked) and the current config; nothing changes."""
        request = self._config_request(
            service_id,
            set=set,
            remove=remove,
            expected_version=expected_version,
            namespace=namespace,
            provider=provider,
            validate_only=True,
            expected_revision=expected_revision,
        )
        response: pb.ApplyConfigResponse = await self._call("ApplyConfig", request, timeout)
        return response

    def _config_request(
        self,
        service_id: str,
        *,
        set: Mapping[str, str] | None,
        remove: Iterable[str],
        expected_version: str,
        namespace: str,
        provider: str | None,
        **change: Any,
    ) -> pb.ApplyConfigRequest:
        patch = types_pb2.ConfigMapPatch(
            service_id=service_id,
            namespace=namespace,
            set=dict(set or {}),
            remove=list(remove),
            expected_version=expected_version,
        )
        request: pb.ApplyConfigRequest = self._request(
            "ApplyConfig", provider, patch=patch, **change
        )
        return request

    async def delete_deployment(
        self,
        service_id: str,
        *,
        namespace: str = "",
        allow_missing: bool = False,
        expected_revision: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> bool:
        """Remove a service and everything the backend holds for it.

        Returns whether a service was removed: False only with ``allow_missing`` when
        there was none (without it, a missing service raises DeploymentNotFound).
        """
        request = self._request(
            "DeleteDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            allow_missing=allow_missing,
            expected_revision=expected_revision,
        )
        response: pb.DeleteDeploymentResponse = await self._call(
            "DeleteDeployment", request, timeout
        )
        return response.deleted

    async def list_revisions(
        self,
        service_id: str,
        *,
        namespace: str = "",
        page_size: int = 0,
        page_token: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> pb.ListRevisionsResponse:
        """One page of a service's revisions, newest first."""
        request = self._request(
            "ListRevisions",
            provider,
            service_id=service_id,
            namespace=namespace,
            page_size=page_size,
            page_token=page_token,
        )
        response: pb.ListRevisionsResponse = await self._call("ListRevisions", request, timeout)
        return response

    async def iter_revisions(
        self,
        service_id: str,
        *,
        namespace: str = "",
        page_size: int = 0,
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[types_pb2.Revision, None]:
        """Every revision the provider keeps, newest first, page after page."""
        token = ""
        while True:
            page = await self.list_revisions(
                service_id,
                namespace=namespace,
                page_size=page_size,
                page_token=token,
                provider=provider,
                timeout=timeout,
            )
            for revision in page.revisions:
                yield revision
            token = page.next_page_token
            if not token:
                return

    async def rollback_deployment(
        self,
        service_id: str,
        *,
        to_revision: int = 0,
        expected_revision: int = 0,
        change_cause: str = "",
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> types_pb2.DeploymentStatus:
        """Go back to ``to_revision``'s spec and config (0: the revision before the
        current one), as a new revision; the status right after."""
        request = self._request(
            "RollbackDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            to_revision=to_revision,
            expected_revision=expected_revision,
            change_cause=change_cause,
        )
        response: pb.RollbackDeploymentResponse = await self._call(
            "RollbackDeployment", request, timeout
        )
        return response.status

    async def plan_rollback(
        self,
        service_id: str,
        *,
        to_revision: int = 0,
        expected_revision: int = 0,
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the gRPC deadline
    ) -> pb.RollbackDeploymentResponse:
        """What ``rollback_deployment`` would do (``validate_only``); nothing changes."""
        request = self._request(
            "RollbackDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            to_revision=to_revision,
            validate_only=True,
            expected_revision=expected_revision,
        )
        response: pb.RollbackDeploymentResponse = await self._call(
            "RollbackDeployment", request, timeout
        )
        return response

    # -- streams --------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = "",
        interval: float | None = None,
        provider: str | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[types_pb2.MetricSample, None]:
        """A sample every ``interval`` seconds (None: server default) until you stop iterating."""
        request = self._request(
            "StreamMetrics", provider, service_id=service_id, namespace=namespace
        )
        if interval is not None:
            request.interval.CopyFrom(_duration(interval))
        async for response in self._stream("StreamMetrics", request, timeout):
            yield response.sample

    async def watch(
        self,
        service_id: str,
        *,
        namespace: str = "",
        until_rollout_done: bool = False,
        provider: str | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[types_pb2.DeploymentStatus, None]:
        """The service's current status, then each change, until you stop iterating; with
        ``until_rollout_done`` the stream ends by itself once the rollout of the desired
        revision has SUCCEEDED or FAILED (its final status last)."""
        request = self._request(
            "WatchDeployment",
            provider,
            service_id=service_id,
            namespace=namespace,
            until_rollout_done=until_rollout_done,
        )
        async for response in self._stream("WatchDeployment", request, timeout):
            yield response.status

    async def stream_logs(
        self,
        service_id: str,
        *,
        namespace: str = "",
        follow: bool = False,
        tail_lines: int = 0,
        since: datetime | None = None,
        instance_id: str = "",
        provider: str | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[types_pb2.LogEntry, None]:
        """What the replicas wrote: the retained lines (the last ``tail_lines`` per replica,
        0 = all retained), then with ``follow`` each new line until you stop iterating."""
        request = self._request(
            "StreamLogs",
            provider,
            service_id=service_id,
            namespace=namespace,
            follow=follow,
            tail_lines=tail_lines,
            instance_id=instance_id,
        )
        if since is not None:
            request.since.CopyFrom(_timestamp(since))
        async for response in self._stream("StreamLogs", request, timeout):
            yield response.entry

    async def watch_deployments(
        self,
        *,
        namespace: str = "",
        provider: str | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncGenerator[pb.WatchDeploymentsResponse, None]:
        """Every deployment of ``namespace`` (empty: every namespace you may see) as ADDED,
        then INITIAL_SNAPSHOT_DONE, then each change, until you stop iterating."""
        request = self._request("WatchDeployments", provider, namespace=namespace)
        async for response in self._stream("WatchDeployments", request, timeout):
            yield response


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
