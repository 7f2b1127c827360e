"""ProviderService: a thin adapter from RPCs to providers.

Each method converts (and so validates) its request, picks the provider from
the pool and converts the result back. Errors are mapped in one place
(``errors.ErrorMappingInterceptor``), so nothing here catches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_core.providers.concurrency import shared_runner
from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.models import MetricSample

from . import convert, paging
from .fanout import MetricsFanout
from .pool import ProviderPool
from .streams import ShutdownSignal, until_shutdown

Context = grpc.aio.ServicerContext[Any, Any]


class ProviderServicer(pb_grpc.ProviderServiceServicer):
    def __init__(self, pool: ProviderPool, shutdown: ShutdownSignal) -> None:
        self._pool = pool
        self._shutdown = shutdown
        self._fanout = MetricsFanout(_metrics_response)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Context
    ) -> pb.ListProvidersResponse:
        # Describing a provider imports its module and SDK (seconds for some clouds'
        # SDKs) and searches sys.path: the bounded blocking pool does it, so the event
        # loop keeps serving every other call (health probes with 1 s deadlines too).
        infos = await shared_runner().run(self._describe_providers)
        return pb.ListProvidersResponse(providers=infos, default_provider=self._pool.default_alias)

    def _describe_providers(self) -> list[types.ProviderInfo]:
        registry = self._pool.registry
        infos = []
        for alias in registry.aliases():
            info = types.ProviderInfo(
                alias=alias,
                is_default=alias == self._pool.default_alias,
                installed=registry.installed(alias),
            )
            entry = registry.lazy_entry(alias)
            info.origin = registry.origin(alias)
            try:
                cls = registry.get(alias) if info.installed else None
            except InfrastructureProviderUnavailable as exc:
                cls = None
                info.installed = False
                info.install_hint = exc.metadata.get("install", exc.message)
            if cls is None:
                info.kind = registry.kind(alias)
                if not info.install_hint and entry and entry.extra:
                    info.install_hint = f"pip install 'alphaswarm-controller[{entry.extra}]'"
            else:
                info.kind = str(getattr(cls.provider_kind, "value", cls.provider_kind))
                info.capabilities.extend(cls.capabilities())
            infos.append(info)
        return infos

    async def CheckHealth(
        self, request: pb.CheckHealthRequest, context: Context
    ) -> pb.CheckHealthResponse:
        provider = await self._pool.get(request.provider)
        health = await provider.health()
        return pb.CheckHealthResponse(health=convert.health_to_proto(health))

    async def StartDeployment(
        self, request: pb.StartDeploymentRequest, context: Context
    ) -> pb.StartDeploymentResponse:
        spec = convert.spec_from_proto(request.spec)
        provider = await self._pool.get(request.provider)
        status = await provider.start(spec)
        return pb.StartDeploymentResponse(status=convert.status_to_proto(status))

    async def StopDeployment(
        self, request: pb.StopDeploymentRequest, context: Context
    ) -> pb.StopDeploymentResponse:
        service_id, namespace = convert.service_ref(request.service_id, request.namespace)
        provider = await self._pool.get(request.provider)
        status = await provider.stop(service_id, namespace=namespace)
        return pb.StopDeploymentResponse(status=convert.status_to_proto(status))

    async def ScaleDeployment(
        self, request: pb.ScaleDeploymentRequest, context: Context
    ) -> pb.ScaleDeploymentResponse:
        service_id, namespace = convert.service_ref(request.service_id, request.namespace)
        replicas = convert.replicas(request.replicas)
        provider = await self._pool.get(request.provider)
        status = await provider.scale(service_id, replicas, namespace=namespace)
        return pb.ScaleDeploymentResponse(status=convert.status_to_proto(status))

    async def GetDeploymentStatus(
        self, request: pb.GetDeploymentStatusRequest, context: Context
    ) -> pb.GetDeploymentStatusResponse:
        service_id, namespace = convert.service_ref(request.service_id, request.namespace)
        provider = await self._pool.get(request.provider)
        status = await provider.status(service_id, namespace=namespace)
        return pb.GetDeploymentStatusResponse(status=convert.status_to_proto(status))

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Context
    ) -> pb.ListDeploymentsResponse:
        namespace = convert.namespace_filter(request.namespace)
        size = paging.page_size(request.page_size)
        alias = self._pool.resolve(request.provider)
        after = paging.decode(request.page_token, alias, namespace or "")
        provider = await self._pool.get(alias)
        everything = await provider.list_deployments(namespace=namespace)
        chunk, resume = paging.page(everything, size, after)
        return pb.ListDeploymentsResponse(
            deployments=[convert.status_to_proto(s) for s in chunk],
            next_page_token=paging.encode(resume, alias, namespace or "") if resume else "",
        )

    async def GetServiceConfig(
        self, request: pb.GetServiceConfigRequest, context: Context
    ) -> pb.GetServiceConfigResponse:
        service_id, namespace = convert.service_ref(request.service_id, request.namespace)
        provider = await self._pool.get(request.provider)
        config = await provider.get_config(service_id, namespace=namespace)
        return pb.GetServiceConfigResponse(config=convert.config_to_proto(config))

    async def ApplyConfig(
        self, request: pb.ApplyConfigRequest, context: Context
    ) -> pb.ApplyConfigResponse:
        patch = convert.patch_from_proto(request.patch)
        provider = await self._pool.get(request.provider)
        config = await provider.apply_config(patch)
        return pb.ApplyConfigResponse(config=convert.config_to_proto(config))

    async def StreamMetrics(
        self, request: pb.StreamMetricsRequest, context: Context
    ) -> AsyncIterator[pb.StreamMetricsResponse]:
        service_id, namespace = convert.service_ref(request.service_id, request.namespace)
        interval = convert.interval_seconds(request.interval, request.HasField("interval"))
        provider = await self._pool.get(request.provider)
        responses = self._fanout.subscribe(provider, service_id, namespace, interval)
        async for response in until_shutdown(responses, self._shutdown, context):
            yield response

    async def WatchDeployment(
        self, request: pb.WatchDeploymentRequest, context: Context
    ) -> AsyncIterator[pb.WatchDeploymentResponse]:
        service_id, namespace = convert.service_ref(request.service_id, request.namespace)
        provider = await self._pool.get(request.provider)
        changes = provider.watch(service_id, namespace=namespace)
        async for status in until_shutdown(changes, self._shutdown, context):
            yield pb.WatchDeploymentResponse(status=convert.status_to_proto(status))


def _metrics_response(sample: MetricSample) -> pb.StreamMetricsResponse:
    return pb.StreamMetricsResponse(sample=convert.sample_to_proto(sample))
