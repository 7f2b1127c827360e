"""ProviderService: a thin adapter from RPCs to providers.

By the time a method runs, the layers around it have resolved and validated what
the request addresses (``CallContext.alias``, ``namespace``, ``service_id``) and
authorized the caller for it. Each method converts (and so validates) the rest of
its request, calls the provider and converts the result back. Errors are mapped in
one place (``errors.ErrorMapping``), so nothing here catches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_core.call import CallContext, Caller, current_call
from alphaswarm_core.providers import plans
from alphaswarm_core.providers.errors import CapabilityUnsupported
from alphaswarm_core.providers.models import DeploymentStatus, MetricSample, Plan

from . import changes, convert, paging
from .fanout import MetricsFanout
from .pool import ProviderPool
from .streams import ShutdownSignal, until_shutdown
from .watchall import DeploymentsFanout

Context = grpc.aio.ServicerContext[Any, Any]


def _call() -> CallContext:
    call = current_call.get()
    assert call is not None, "ProviderService methods run inside the server's layers"
    return call


def _visible(caller: Caller) -> Callable[[str], bool]:
    """Which namespaces a namespace-wide call shows this caller: those it may address."""
    allowed = caller.namespaces
    return (lambda _: True) if allowed is None else allowed.__contains__


class ProviderServicer(pb_grpc.ProviderServiceServicer):
    def __init__(self, pool: ProviderPool, shutdown: ShutdownSignal) -> None:
        self._pool = pool
        self._shutdown = shutdown
        self._fanout = MetricsFanout(_metrics_response)
        self._deployments = DeploymentsFanout()

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Context
    ) -> pb.ListProvidersResponse:
        infos = [convert.provider_info_to_proto(d) for d in await self._pool.describe_all()]
        return pb.ListProvidersResponse(providers=infos, default_provider=self._pool.default_alias)

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: Context
    ) -> pb.CheckHealthResponse:
        call = _call()
        provider = await self._pool.get(call.alias)
        health = await provider.health()
        return pb.CheckHealthResponse(health=convert.health_to_proto(health, call.caller))

    async def StartDeployment(
        self, request: pb.StartDeploymentRequest, context: Context
    ) -> pb.StartDeploymentResponse:
        call = _call()
        spec = convert.spec_from_proto(request.spec, call.namespace)
        change = convert.change_from_proto(request.expected_revision, request.change_cause)
        provider = await self._pool.get(call.alias)
        plan = await changes.prepare(
            provider, call, change, request.validate_only, lambda now: plans.plan_start(now, spec)
        )
        if request.validate_only:
            return pb.StartDeploymentResponse(
                status=_status(await changes.status_if_any(provider, call)), plan=_plan(plan)
            )
        status = await provider.start(spec)
        return pb.StartDeploymentResponse(status=_status(status), plan=_plan(plan))

    async def StopDeployment(
        self, request: pb.StopDeploymentRequest, context: Context
    ) -> pb.StopDeploymentResponse:
        call = _call()
        change = convert.change_from_proto(request.expected_revision, "")
        provider = await self._pool.get(call.alias)
        await changes.prepare(provider, call, change, False, None)
        status = await provider.stop(call.service_id, namespace=call.namespace)
        response = pb.StopDeploymentResponse()
        convert.fill_status(response.status, status, call.caller)
        return response

    async def ScaleDeployment(
        self, request: pb.ScaleDeploymentRequest, context: Context
    ) -> pb.ScaleDeploymentResponse:
        call = _call()
        replicas = convert.replicas(request.replicas)
        change = convert.change_from_proto(request.expected_revision, "")
        provider = await self._pool.get(call.alias)
        plan = await changes.prepare(
            provider,
            call,
            change,
            request.validate_only,
            lambda now: plans.plan_scale(changes.existing(now, call), replicas),
        )
        if request.validate_only:
            status = await provider.status(call.service_id, namespace=call.namespace)
        else:
            status = await provider.scale(call.service_id, replicas, namespace=call.namespace)
        return pb.ScaleDeploymentResponse(status=_status(status), plan=_plan(plan))

    async def GetDeploymentStatus(
        self, request: pb.GetDeploymentStatusRequest, context: Context
    ) -> pb.GetDeploymentStatusResponse:
        call = _call()
        provider = await self._pool.get(call.alias)
        status = await provider.status(call.service_id, namespace=call.namespace)
        response = pb.GetDeploymentStatusResponse()
        convert.fill_status(response.status, status, call.caller)
        return response

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Context
    ) -> pb.ListDeploymentsResponse:
        call = _call()
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, call.alias, call.namespace, "ListDeployments")
        provider = await self._pool.get(call.alias)
        everything = await provider.list_deployments(namespace=call.namespace or None)
        if not call.namespace:
            visible = _visible(call.caller)
            everything = [status for status in everything if visible(status.namespace)]
        chunk, resume = paging.page(everything, size, after)
        response = pb.ListDeploymentsResponse(
            next_page_token=paging.encode(resume, call.alias, call.namespace) if resume else ""
        )
        add = response.deployments.add
        for status in chunk:
            convert.fill_status(add(), status)
        return response

    async def GetServiceConfig(
        self, request: pb.GetServiceConfigRequest, context: Context
    ) -> pb.GetServiceConfigResponse:
        call = _call()
        provider = await self._pool.get(call.alias)
        config = await provider.get_config(call.service_id, namespace=call.namespace)
        return pb.GetServiceConfigResponse(config=convert.config_to_proto(config))

    async def ApplyConfig(
        self, request: pb.ApplyConfigRequest, context: Context
    ) -> pb.ApplyConfigResponse:
        call = _call()
        patch = convert.patch_from_proto(request.patch, call.namespace)
        change = convert.change_from_proto(request.expected_revision, request.change_cause)
        provider = await self._pool.get(call.alias)
        plan = await changes.prepare(
            provider,
            call,
            change,
            request.validate_only,
            lambda now: plans.plan_config(changes.existing(now, call), patch),
        )
        if request.validate_only:
            config = await provider.get_config(call.service_id, namespace=call.namespace)
        else:
            config = await provider.apply_config(patch)
        return pb.ApplyConfigResponse(config=convert.config_to_proto(config), plan=_plan(plan))

    async def ListRevisions(
        self, request: pb.ListRevisionsRequest, context: Context
    ) -> pb.ListRevisionsResponse:
        call = _call()
        size = paging.page_size(request.page_size)
        query = f"{call.namespace}/{call.service_id}"
        after = paging.decode(request.page_token, call.alias, query, "ListRevisions")
        provider = await self._pool.get(call.alias)
        history = await provider.list_revisions(call.service_id, namespace=call.namespace)
        chunk, resume = paging.page_revisions(history, size, after)
        return pb.ListRevisionsResponse(
            revisions=[convert.revision_to_proto(r) for r in chunk],
            next_page_token=paging.encode(resume, call.alias, query) if resume else "",
        )

    async def RollbackDeployment(
        self, request: pb.RollbackDeploymentRequest, context: Context
    ) -> pb.RollbackDeploymentResponse:
        call = _call()
        change = convert.change_from_proto(request.expected_revision, request.change_cause)
        provider = await self._pool.get(call.alias)
        history = await provider.list_revisions(call.service_id, namespace=call.namespace)
        target = convert.rollback_target(history, request.to_revision, call)
        plan = await changes.prepare(
            provider,
            call,
            change,
            request.validate_only,
            lambda now: plans.plan_rollback(changes.existing(now, call), target),
        )
        if request.validate_only:
            status = await provider.status(call.service_id, namespace=call.namespace)
        else:
            status = await provider.rollback(
                call.service_id, target.number, namespace=call.namespace
            )
        return pb.RollbackDeploymentResponse(status=_status(status), plan=_plan(plan))

    async def StreamMetrics(
        self, request: pb.StreamMetricsRequest, context: Context
    ) -> AsyncIterator[pb.StreamMetricsResponse]:
        call = _call()
        interval = convert.interval_seconds(request.interval, request.HasField("interval"))
        provider = await self._pool.get(call.alias)
        responses = self._fanout.subscribe(provider, call.service_id, call.namespace, interval)
        async for response in until_shutdown(responses, self._shutdown, context):
            yield response

    async def StreamLogs(
        self, request: pb.StreamLogsRequest, context: Context
    ) -> AsyncIterator[pb.StreamLogsResponse]:
        call = _call()
        query = convert.log_query_from_proto(request)
        provider = await self._pool.get(call.alias)
        entries = provider.stream_logs(call.service_id, query, namespace=call.namespace)
        async for entry in until_shutdown(entries, self._shutdown, context):
            yield pb.StreamLogsResponse(entry=convert.log_entry_to_proto(entry))

    async def DeleteDeployment(
        self, request: pb.DeleteDeploymentRequest, context: Context
    ) -> pb.DeleteDeploymentResponse:
        call = _call()
        change = convert.change_from_proto(request.expected_revision, "")
        provider = await self._pool.get(call.alias)
        await changes.prepare(provider, call, change, False, None)
        deleted = await provider.delete(
            call.service_id, namespace=call.namespace, allow_missing=request.allow_missing
        )
        return pb.DeleteDeploymentResponse(deleted=deleted)

    async def WatchDeployments(
        self, request: pb.WatchDeploymentsRequest, context: Context
    ) -> AsyncIterator[pb.WatchDeploymentsResponse]:
        call = _call()
        provider = await self._pool.get(call.alias)
        events = self._deployments.subscribe(
            provider, call.namespace or None, _visible(call.caller)
        )
        async for event in until_shutdown(events, self._shutdown, context):
            yield convert.event_to_proto(event)

    async def WatchDeployment(
        self, request: pb.WatchDeploymentRequest, context: Context
    ) -> AsyncIterator[pb.WatchDeploymentResponse]:
        call = _call()
        provider = await self._pool.get(call.alias)
        if request.until_rollout_done and not changes.keeps_revisions(provider):
            raise CapabilityUnsupported(
                call.alias, "revisions", "until_rollout_done needs rollouts to follow"
            )
        statuses = provider.watch(call.service_id, namespace=call.namespace)
        async for status in until_shutdown(statuses, self._shutdown, context):
            response = pb.WatchDeploymentResponse()
            convert.fill_status(response.status, status)
            yield response
            if request.until_rollout_done and status.rollout and status.rollout.done:
                return


def _status(status: DeploymentStatus | None) -> types.DeploymentStatus | None:
    """The status a mutating call answers, with the spec the caller may see."""
    return None if status is None else convert.status_to_proto(status, _call().caller)


def _plan(plan: Plan | None) -> types.Plan | None:
    return None if plan is None else convert.plan_to_proto(plan)


def _metrics_response(sample: MetricSample) -> pb.StreamMetricsResponse:
    return pb.StreamMetricsResponse(sample=convert.sample_to_proto(sample))
