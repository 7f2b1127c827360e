"""KubernetesProvider: services as Deployments, config as ConfigMaps (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from kubernetes.client.exceptions import ApiException

from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.errors import (
    BackendConflictError,
    BackendRejectedError,
    BackendUnavailableError,
    CapabilityUnsupported,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    DeploymentEvent,
    DeploymentSpec,
    DeploymentStatus,
    EventKind,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    InfrastructureProvider,
    status_key,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .connection import (
    ClusterConnection,
    ResolvedCluster,
    client_for_connection,
    client_from_environment,
    credentials_missing,
    default_kubeconfig,
)
from .errors import TRANSPORT_ERRORS, Target, translate_api_error, translate_transport_error
from .logs import Followers, has_log, merged_tail
from .manifests import (
    CONFIG_HASH_KEY,
    MANAGED_BY,
    MANAGED_BY_KEY,
    MANAGED_SELECTOR,
    STATE_KEY,
    check_config_patch,
    check_spec,
    config_hash,
    configmap_manifest,
    configmap_name,
    deployment_manifest,
    service_manifest,
    service_selector,
)
from .metrics import sample_from_pod_metrics
from .reflector import Changed, Listed, Reflector
from .status import deployment_status
from .transport import APPLY, MERGE, STRATEGIC, JsonObj, Response, Transport
from .watch import WatchStream

log = logging.getLogger(__name__)

APPS = "/apis/apps/v1"
CORE = "/api/v1"
METRICS_API = "/apis/metrics.k8s.io/v1beta1"
SELF_ACCESS_REVIEW = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
FIELD_MANAGER = "alphaswarm"
CONFIG_FIELD_MANAGER = "alphaswarm-config"

#: (verb, API group, resource, subresource) the provider needs in its namespace.
REQUIRED_PERMISSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("get", "apps", "deployments", ""),
    ("list", "apps", "deployments", ""),
    ("watch", "apps", "deployments", ""),
    ("create", "apps", "deployments", ""),
    ("patch", "apps", "deployments", ""),
    ("delete", "apps", "deployments", ""),
    ("patch", "apps", "deployments", "scale"),
    ("get", "", "configmaps", ""),
    ("create", "", "configmaps", ""),
    ("update", "", "configmaps", ""),
    ("delete", "", "configmaps", ""),
    ("get", "", "services", ""),
    ("create", "", "services", ""),
    ("patch", "", "services", ""),
    ("delete", "", "services", ""),
    ("list", "", "pods", ""),
    ("watch", "", "pods", ""),
    ("get", "", "pods", "log"),
)
#: Cluster-wide (every namespace): list_deployments() and watch_deployments() without a
#: namespace list and watch Deployments across the cluster.
CLUSTER_PERMISSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("list", "apps", "deployments", ""),
    ("watch", "apps", "deployments", ""),
)
#: Only with ALPHASWARM_KUBERNETES_CREATE_NAMESPACES (a cluster-scoped permission).
NAMESPACE_PERMISSION = ("create", "", "namespaces", "")


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _deployments(namespace: str, name: str = "") -> str:
    path = f"{APPS}/namespaces/{namespace}/deployments"
    return f"{path}/{name}" if name else path


def _core(namespace: str, resource: str, name: str = "") -> str:
    path = f"{CORE}/namespaces/{namespace}/{resource}"
    return f"{path}/{name}" if name else path


def _is_ours(obj: JsonObj) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY_KEY) == MANAGED_BY


def _watch_key(status: DeploymentStatus) -> tuple[object, ...]:
    return (status.state, status.desired_replicas, status.ready_replicas, status.message)


class KubernetesProvider(InfrastructureProvider):
    """Runs each service as a Deployment (+ Service, + ConfigMap) in the request's namespace."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.KUBERNETES
    provider_alias: ClassVar[str] = "kubernetes"

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        runner: BlockingRunner | None = None,
        connection: ClusterConnection | None = None,
        alias: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(env=env, runner=runner)
        self.connection = connection
        self.alias = alias or self.provider_alias
        self.kind = kind or ProviderKind.KUBERNETES.value
        self._cluster: ResolvedCluster | None = None
        self._connect_lock = asyncio.Lock()
        try:
            self.page_size = int(self.setting("PAGE_SIZE", "500"))
            self.call_timeout = float(self.setting("TIMEOUT", "30"))
            self.watch_window = int(self.setting("WATCH_TIMEOUT", "300"))
        except ValueError as exc:
            raise InfrastructureProviderUnavailable(
                "ALPHASWARM_KUBERNETES_PAGE_SIZE, _TIMEOUT and _WATCH_TIMEOUT must be numbers",
                reason=ErrorReason.SETTING_INVALID,
            ) from exc
        if not 1 <= self.page_size <= 10_000 or self.call_timeout <= 0 or self.watch_window < 1:
            raise InfrastructureProviderUnavailable(
                "ALPHASWARM_KUBERNETES_PAGE_SIZE must be 1-10000, _TIMEOUT and _WATCH_TIMEOUT "
                "positive",
                reason=ErrorReason.SETTING_INVALID,
            )
        self.create_namespaces = _truthy(self.setting("CREATE_NAMESPACES", "false"))

    @classmethod
    def from_connection(
        cls,
        connection: ClusterConnection,
        *,
        env: Mapping[str, str] | None = None,
        alias: str = "kubernetes",
        kind: str | None = None,
        runner: BlockingRunner | None = None,
    ) -> KubernetesProvider:
        """A provider bound to an explicit cluster (the cloud providers' managed clusters)."""
        return cls(env=env, runner=runner, connection=connection, alias=alias, kind=kind)

    # -- plumbing ---------------------------------------------------------------------------

    def _check_credentials(self) -> None:
        if self.connection is not None:
            return
        if default_kubeconfig(self.env) is None and not self.env.get("KUBERNETES_SERVICE_HOST"):
            raise credentials_missing()

    async def _discover_connection(self) -> ClusterConnection | None:
        """The hook for subclasses that learn their cluster lazily (EKS, AKS, GKE).

        Return the ``ClusterConnection`` to use (endpoint, CA, token or token
        source). It is called on the event loop, on first use (never in the
        constructor, which does no I/O), at most once at a time under a lock, and
        only while ``self.connection`` is None: a provider built with a connection
        (``from_connection``) never calls it. Blocking work (SDK calls, signing)
        goes through ``self.run_blocking``. An error propagates to the call that
        needed the cluster; the next call asks again. The default, None, means
        kubeconfig or the in-cluster service account (``client_from_environment``).
        """
        return None

    def _build_cluster(self) -> ResolvedCluster:
        """The API client for ``self.connection``, else from kubeconfig / in-cluster (blocking:
        kubeconfig may run an exec credential plugin)."""
        if self.connection is not None:
            return client_for_connection(self.connection)
        self._check_credentials()
        return client_from_environment(self.env)

    async def _resolved(self) -> ResolvedCluster:
        """The cluster every call goes to, found once (see ``_discover_connection``)."""
        if self._cluster is not None:
            return self._cluster
        async with self._connect_lock:
            if self._cluster is None:
                if self.connection is None:
                    self.connection = await self._discover_connection()
                self._cluster = await self.run_blocking(self._build_cluster)
            return self._cluster

    async def _namespace(self, namespace: str | None) -> str:
        if namespace:
            return namespace
        return (await self._resolved()).namespace

    @staticmethod
    def _describe(cluster: ResolvedCluster) -> str:
        return cluster.source

    async def _call(
        self,
        method: str,
        path: str,
        target: Target,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Response:
        cluster = await self._resolved()
        transport = Transport(cluster.api_client)
        try:
            return await self.run_blocking(
                transport.request,
                method,
                path,
                query=query,
                body=body,
                content_type=content_type,
                timeout=remaining_timeout(self.call_timeout),
            )
        except ApiException as exc:
            raise translate_api_error(
                exc, target, alias=self.alias, source=self._describe(cluster)
            ) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._unreachable(exc, target, cluster) from exc

    def _unreachable(
        self, exc: BaseException, target: Target, cluster: ResolvedCluster
    ) -> InfrastructureProviderError:
        return translate_transport_error(
            exc,
            target,
            alias=self.alias,
            endpoint=cluster.endpoint,
            source=self._describe(cluster),
            namespace=target.namespace or cluster.namespace,
        )

    async def _get(self, path: str, target: Target) -> JsonObj | None:
        """The object at ``path``, or None when it does not exist."""
        try:
            return (
                await self._call("GET", path, Target(namespace=target.namespace, what=target.what))
            ).body
        except ResourceNotFoundError:
            return None

    async def _require_deployment(self, service_id: str, namespace: str) -> JsonObj:
        target = Target(service_id, namespace, "read Deployment")
        deployment = await self._get(_deployments(namespace, service_id), target)
        if deployment is None or not _is_ours(deployment):
            # Someone else's Deployment of that name is not a service of this provider.
            raise DeploymentNotFoundError(service_id, namespace)
        return deployment

    async def _list_all(
        self, path: str, target: Target, *, selector: str, page_size: int | None = None
    ) -> list[JsonObj]:
        """Every object at ``path`` matching ``selector``, one request per page."""
        items: list[JsonObj] = []
        token = ""
        while True:
            page = await self._call(
                "GET",
                path,
                target,
                query={
                    "labelSelector": selector,
                    "limit": page_size or self.page_size,
                    "continue": token,
                },
            )
            items.extend(page.body.get("items") or [])
            token = (page.body.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    async def _pods(self, service_id: str, namespace: str) -> list[JsonObj]:
        return await self._list_all(
            _core(namespace, "pods"),
            Target(namespace=namespace, what="list pods"),
            selector=service_selector(service_id),
        )

    async def _status_with_pods(self, deployment: JsonObj) -> DeploymentStatus:
        meta = deployment["metadata"]
        pods = await self._pods(meta["name"], meta["namespace"])
        return deployment_status(deployment, self.alias, pods)

    # -- health -----------------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        cluster = await self._resolved()
        namespace = cluster.namespace
        version = (
            await self._call(
                "GET", "/version", Target(namespace=namespace, what="read the server version")
            )
        ).body
        # (namespace or "" for cluster-wide, permission); one SelfSubjectAccessReview each.
        wanted = [(namespace, p) for p in REQUIRED_PERMISSIONS]
        wanted += [("", p) for p in CLUSTER_PERMISSIONS]
        if self.create_namespaces:
            wanted.append(("", NAMESPACE_PERMISSION))
        allowed = await asyncio.gather(
            *(
                self._can(where, verb, group, resource, sub)
                for where, (verb, group, resource, sub) in wanted
            )
        )
        missing = [
            f"{verb} {resource}{'/' + sub if sub else ''}{'.' + group if group else ''}"
            + ("" if where or resource == "namespaces" else " (all namespaces)")
            for (where, (verb, group, resource, sub)), ok in zip(wanted, allowed, strict=True)
            if not ok
        ]
        server = str(version.get("gitVersion") or "unknown")
        details = {
            "server_version": server,
            "endpoint": cluster.endpoint,
            "source": self._describe(cluster),
            "namespace": namespace,
            "missing_permissions": ", ".join(missing),
        }
        if missing:
            message = (
                f"Kubernetes {server} at {cluster.endpoint} is reachable, but RBAC denies "
                f"{', '.join(missing)} in namespace {namespace}"
            )
        else:
            message = f"Kubernetes {server} at {cluster.endpoint}; namespace {namespace}"
        return ProviderHealth(
            alias=self.alias,
            kind=str(getattr(self.kind, "value", self.kind)),
            healthy=not missing,
            message=message,
            details=details,
        )

    async def _can(self, namespace: str, verb: str, group: str, resource: str, sub: str) -> bool:
        """A SelfSubjectAccessReview; ``namespace`` "" asks for every namespace."""
        attributes = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attributes["namespace"] = namespace
        if sub:
            attributes["subresource"] = sub
        review = await self._call(
            "POST",
            SELF_ACCESS_REVIEW,
            Target(namespace=namespace, what="SelfSubjectAccessReview"),
            body={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
        )
        return bool((review.body.get("status") or {}).get("allowed"))

    # -- start ------------------------------------------------------------------------------

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        check_spec(spec)
        namespace, service_id = spec.namespace, spec.service_id
        existing = await self._get(
            _deployments(namespace, service_id), Target(namespace=namespace, what="read Deployment")
        )
        if existing is not None and not _is_ours(existing):
            raise BackendRejectedError(
                f"a Deployment {namespace}/{service_id} exists that alphaswarm does not manage; "
                "pick another service_id or remove it",
                reason=ErrorReason.NAME_TAKEN,
                metadata={"service_id": service_id, "namespace": namespace},
            )
        config, created_config = await self._ensure_configmap(service_id, namespace)
        created_deployment = False
        try:
            applied = await self._call(
                "PATCH",
                _deployments(namespace, service_id),
                Target(namespace=namespace, what="apply Deployment"),
                query={"fieldManager": FIELD_MANAGER, "force": True},
                body=deployment_manifest(spec, config_hash(config.get("data") or {})),
                content_type=APPLY,
            )
            created_deployment = existing is None
            await self._converge_service(spec)
        except Exception:
            await self._roll_back(service_id, namespace, created_deployment, created_config)
            raise
        return await self._status_with_pods(applied.body)

    async def _ensure_configmap(self, service_id: str, namespace: str) -> tuple[JsonObj, bool]:
        """The service's ConfigMap, created empty when missing; (object, created)."""
        target = Target(namespace=namespace, what="create ConfigMap")
        path = _core(namespace, "configmaps", configmap_name(service_id))
        existing = await self._get(path, target)
        if existing is not None:
            return existing, False
        for attempt in range(2):
            try:
                created = await self._call(
                    "POST",
                    _core(namespace, "configmaps"),
                    target,
                    body=configmap_manifest(service_id, namespace),
                )
                return created.body, True
            except ResourceNotFoundError as exc:
                if not self.create_namespaces or attempt or "namespace" not in exc.metadata:
                    raise
                await self._create_namespace(namespace)
            except BackendConflictError:  # created concurrently by another controller replica
                existing = await self._get(path, target)
                if existing is not None:
                    return existing, False
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _create_namespace(self, namespace: str) -> None:
        with contextlib.suppress(BackendConflictError):
            await self._call(
                "POST",
                f"{CORE}/namespaces",
                Target(namespace=namespace, what="create namespace"),
                body={"metadata": {"name": namespace, "labels": {MANAGED_BY_KEY: MANAGED_BY}}},
            )

    async def _converge_service(self, spec: DeploymentSpec) -> None:
        namespace, service_id = spec.namespace, spec.service_id
        path = _core(namespace, "services", service_id)
        target = Target(namespace=namespace, what="apply Service")
        if spec.ports:
            await self._call(
                "PATCH",
                path,
                target,
                query={"fieldManager": FIELD_MANAGER, "force": True},
                body=service_manifest(spec),
                content_type=APPLY,
            )
        else:
            await self._delete_own_service(service_id, namespace)

    async def _delete_own_service(self, service_id: str, namespace: str) -> None:
        """Delete the Service of this name only if this provider made it."""
        path = _core(namespace, "services", service_id)
        target = Target(namespace=namespace, what="delete Service")
        existing = await self._get(path, target)
        if existing is None:
            return
        labels = existing["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY_KEY) == MANAGED_BY:
            with contextlib.suppress(ResourceNotFoundError):
                await self._call("DELETE", path, target)

    async def _roll_back(
        self, service_id: str, namespace: str, deployment: bool, config: bool
    ) -> None:
        """Remove what a failed start created, so a failure leaves nothing behind."""
        undo = []
        if deployment:
            undo.append(_deployments(namespace, service_id))
        if config:
            undo.append(_core(namespace, "configmaps", configmap_name(service_id)))
        for path in undo:
            try:
                await self._call("DELETE", path, Target(namespace=namespace, what="roll back"))
            except InfrastructureProviderError as exc:
                log.warning("could not roll back %s after a failed start: %s", path, exc.message)

    # -- stop / scale / status / list -------------------------------------------------------

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        ns = await self._namespace(namespace)
        deployment = await self._require_deployment(service_id, ns)
        annotations = deployment["metadata"].get("annotations") or {}
        if annotations.get(STATE_KEY) != "stopped" or deployment["spec"].get("replicas") != 0:
            deployment = (
                await self._call(
                    "PATCH",
                    _deployments(ns, service_id),
                    Target(service_id, ns, "stop Deployment"),
                    query={"fieldManager": FIELD_MANAGER},
                    body={
                        "metadata": {"annotations": {STATE_KEY: "stopped"}},
                        "spec": {"replicas": 0},
                    },
                    content_type=STRATEGIC,
                )
            ).body
        await self._delete_own_service(service_id, ns)
        return await self._status_with_pods(deployment)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        ns = await self._namespace(namespace)
        deployment = await self._require_deployment(service_id, ns)
        stopped = (deployment["metadata"].get("annotations") or {}).get(STATE_KEY) == "stopped"
        if stopped and replicas > 0:
            raise BackendRejectedError(
                f"deployment {ns}/{service_id} is stopped; StartDeployment brings it back",
                reason=ErrorReason.DEPLOYMENT_STOPPED,
                metadata={"service_id": service_id, "namespace": ns},
            )
        if deployment["spec"].get("replicas") != replicas:
            await self._call(
                "PATCH",
                _deployments(ns, service_id) + "/scale",
                Target(service_id, ns, "scale Deployment"),
                query={"fieldManager": FIELD_MANAGER},
                body={"spec": {"replicas": replicas}},
                content_type=MERGE,
            )
            deployment = await self._require_deployment(service_id, ns)
        return await self._status_with_pods(deployment)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        ns = await self._namespace(namespace)
        return await self._status_with_pods(await self._require_deployment(service_id, ns))

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        path = _deployments(namespace) if namespace else f"{APPS}/deployments"
        items = await self._list_all(
            path,
            Target(namespace=namespace or "", what="list Deployments"),
            selector=MANAGED_SELECTOR,
        )
        return [deployment_status(item, self.alias) for item in items]

    # -- delete -----------------------------------------------------------------------------

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """The Service, the ConfigMap, then the Deployment (its ReplicaSets and pods follow
        through the garbage collector): everything start created, only if it is ours.

        The Deployment goes last, so a delete that fails half-way leaves the service
        listed and a retry finishes it. Its DELETE carries the uid just read
        (a precondition): a Deployment of that name created meanwhile is not touched.
        """
        ns = await self._namespace(namespace)
        deployment = await self._get(
            _deployments(ns, service_id), Target(namespace=ns, what="read Deployment")
        )
        ours = deployment is not None and _is_ours(deployment)
        await self._delete_own_service(service_id, ns)
        await self._delete_own_configmap(service_id, ns)
        if not ours:
            if allow_missing:
                return False
            raise DeploymentNotFoundError(service_id, ns)
        assert deployment is not None
        with contextlib.suppress(ResourceNotFoundError):
            await self._call(
                "DELETE",
                _deployments(ns, service_id),
                Target(namespace=ns, what="delete Deployment"),
                body={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "propagationPolicy": "Background",
                    "preconditions": {"uid": deployment["metadata"]["uid"]},
                },
            )
        return True

    async def _delete_own_configmap(self, service_id: str, namespace: str) -> None:
        path = _core(namespace, "configmaps", configmap_name(service_id))
        target = Target(namespace=namespace, what="delete ConfigMap")
        existing = await self._get(path, target)
        if existing is not None and _is_ours(existing):
            with contextlib.suppress(ResourceNotFoundError):
                await self._call("DELETE", path, target)

    # -- config -----------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        ns = await self._namespace(namespace)
        target = Target(service_id, ns, "read ConfigMap")
        config = await self._get(_core(ns, "configmaps", configmap_name(service_id)), target)
        if config is None:
            await self._require_deployment(service_id, ns)
            return ServiceConfig(service_id, ns, {}, "")
        return ServiceConfig(
            service_id, ns, dict(config.get("data") or {}), config["metadata"]["resourceVersion"]
        )

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        check_config_patch(patch)
        ns, service_id = patch.namespace, patch.service_id
        target = Target(service_id, ns, "update ConfigMap")
        path = _core(ns, "configmaps", configmap_name(service_id))
        for _ in range(3):
            config = await self._get(path, target)
            if config is None:
                await self._require_deployment(service_id, ns)
                data: dict[str, str] = {}
                version = ""
            else:
                data = dict(config.get("data") or {})
                version = config["metadata"]["resourceVersion"]
            if patch.expected_version and patch.expected_version != version:
                raise ConfigVersionConflict(
                    service_id, ns, expected=patch.expected_version, actual=version
                )
            merged = patch.applied_to(data)
            if merged == data and config is not None:
                return ServiceConfig(service_id, ns, data, version)
            try:
                if config is None:
                    body = configmap_manifest(service_id, ns)
                    body["data"] = merged
                    written = await self._call("POST", _core(ns, "configmaps"), target, body=body)
                else:
                    config["data"] = merged  # metadata.resourceVersion makes the PUT conditional
                    written = await self._call("PUT", path, target, body=config)
            except BackendConflictError:
                if patch.expected_version:
                    current = await self._get(path, target)
                    actual = current["metadata"]["resourceVersion"] if current else ""
                    raise ConfigVersionConflict(
                        service_id, ns, expected=patch.expected_version, actual=actual
                    ) from None
                continue  # an unconditional patch re-reads and merges again
            await self._roll_out(service_id, ns, merged)
            new_data = dict(written.body.get("data") or {})
            new_version = str(written.body["metadata"]["resourceVersion"])
            return ServiceConfig(service_id, ns, new_data, new_version)
        raise BackendConflictError(
            f"the config of {ns}/{service_id} kept changing concurrently; retry"
        )

    async def _roll_out(self, service_id: str, namespace: str, data: dict[str, str]) -> None:
        """Change the pod template so the Deployment replaces its pods onto the new config."""
        annotation = {CONFIG_HASH_KEY: config_hash(data)}
        with contextlib.suppress(ResourceNotFoundError):
            await self._call(
                "PATCH",
                _deployments(namespace, service_id),
                Target(namespace=namespace, what="roll out the new config"),
                query={"fieldManager": CONFIG_FIELD_MANAGER},
                body={"spec": {"template": {"metadata": {"annotations": annotation}}}},
                content_type=STRATEGIC,
            )

    # -- metrics ----------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        ns = await self._namespace(namespace)
        await self._require_deployment(service_id, ns)
        await self._require_metrics_api(ns)
        path = f"{METRICS_API}/namespaces/{ns}/pods"
        target = Target(namespace=ns, what="read PodMetrics")
        while True:
            now = datetime.now(UTC)
            try:
                page = await self._call(
                    "GET", path, target, query={"labelSelector": service_selector(service_id)}
                )
                sample = sample_from_pod_metrics(
                    page.body.get("items") or [],
                    service_id=service_id,
                    namespace=ns,
                    alias=self.alias,
                    now=now,
                )
            except (InfrastructureProviderError, ValueError) as exc:
                message = exc.message if isinstance(exc, InfrastructureProviderError) else str(exc)
                sample = MetricSample(
                    service_id, ns, self.alias, now, replicas=0, ok=False, error=message
                )
            yield sample
            await asyncio.sleep(interval_seconds)

    async def _require_metrics_api(self, namespace: str) -> None:
        try:
            await self._call(
                "GET", METRICS_API, Target(namespace=namespace, what="discover metrics.k8s.io")
            )
        except ResourceNotFoundError:
            raise CapabilityUnsupported(
                self.alias,
                "metrics",
                "this cluster serves no metrics.k8s.io API; install metrics-server to stream "
                "metrics",
            ) from None

    # -- watch ----------------------------------------------------------------------------

    def _reflector(
        self, cluster: ResolvedCluster, path: str, target: Target, query: Mapping[str, str]
    ) -> Reflector:
        """client-go's list+watch over ``path`` with ``query``'s selectors (see reflector.py)."""

        async def list_page(token: str) -> JsonObj:
            page = await self._call(
                "GET", path, target, query={**query, "limit": self.page_size, "continue": token}
            )
            return page.body

        def open_watch(version: str) -> WatchStream:
            watch_query = {
                **query,
                "watch": True,
                "resourceVersion": version,
                "allowWatchBookmarks": True,
                "timeoutSeconds": self.watch_window,
            }
            return WatchStream(
                functools.partial(
                    Transport(cluster.api_client).stream,
                    path,
                    query=watch_query,
                    timeout=(min(self.call_timeout, 10.0), float(self.watch_window + 30)),
                )
            )

        def translate(exc: BaseException) -> InfrastructureProviderError:
            if isinstance(exc, ApiException):
                return translate_api_error(
                    exc, target, alias=self.alias, source=self._describe(cluster)
                )
            if isinstance(exc, TRANSPORT_ERRORS):
                return self._unreachable(exc, target, cluster)
            return BackendUnavailableError(
                f"the watch broke ({target.what}): {type(exc).__name__}",
                metadata={"provider": self.alias},
            )

        return Reflector(
            list_page=list_page, open_watch=open_watch, translate=translate, what=target.what
        )

    async def watch(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 2.0,
    ) -> AsyncGenerator[DeploymentStatus, None]:
        """The current status, then each change: a list+watch of the one Deployment.

        The list gives the Deployment and a fresh collection resourceVersion to
        watch from; reflector.py has the rules for 410 Gone, bookmarks and
        failures. ``interval_seconds`` is unused: changes come as they happen.
        """
        ns = await self._namespace(namespace)
        cluster = await self._resolved()
        reflector = self._reflector(
            cluster,
            _deployments(ns),
            Target(service_id, ns, f"watch Deployment {ns}/{service_id}"),
            {"labelSelector": MANAGED_SELECTOR, "fieldSelector": f"metadata.name={service_id}"},
        )
        last_key: tuple[object, ...] | None = None
        events = reflector.events()
        try:
            async for event in events:
                if isinstance(event, Listed):
                    if not event.items:
                        raise DeploymentNotFoundError(service_id, ns)
                    obj = event.items[0]
                elif event.kind == "DELETED":
                    raise DeploymentNotFoundError(service_id, ns)
                else:
                    obj = event.obj
                if last_key is None:  # the first status carries the instances
                    status = await self._status_with_pods(obj)
                else:
                    status = deployment_status(obj, self.alias)
                if _watch_key(status) != last_key:
                    last_key = _watch_key(status)
                    yield status
        finally:
            await events.aclose()

    async def watch_deployments(
        self, *, namespace: str | None = None, interval_seconds: float = 2.0
    ) -> AsyncGenerator[DeploymentEvent, None]:
        """One list+watch of the managed Deployments of ``namespace`` (every namespace when
        None), however many services there are: every one as ADDED, SNAPSHOT_DONE, then
        ADDED/MODIFIED/DELETED as they change. A relist (after 410 Gone) is diffed
        against what was sent, so no change is lost or repeated. ``interval_seconds``
        is unused: changes come as they happen."""
        cluster = await self._resolved()
        path = _deployments(namespace) if namespace else f"{APPS}/deployments"
        where = namespace or "every namespace"
        reflector = self._reflector(
            cluster,
            path,
            Target(namespace=namespace or "", what=f"watch Deployments in {where}"),
            {"labelSelector": MANAGED_SELECTOR},
        )
        known: dict[tuple[str, str], DeploymentStatus] = {}
        synced = False
        events = reflector.events()
        try:
            async for event in events:
                if isinstance(event, Listed):
                    current = {}
                    for item in event.items:
                        status = deployment_status(item, self.alias)
                        current[(status.namespace, status.service_id)] = status
                    for key, status in current.items():
                        before = known.get(key)
                        if before is None:
                            yield DeploymentEvent(EventKind.ADDED, status)
                        elif status_key(before) != status_key(status):
                            yield DeploymentEvent(EventKind.MODIFIED, status)
                    for key in known.keys() - current.keys():
                        yield DeploymentEvent(EventKind.DELETED, known[key])
                    known = current
                    if not synced:
                        synced = True
                        yield DeploymentEvent(EventKind.SNAPSHOT_DONE)
                    continue
                status = deployment_status(event.obj, self.alias)
                key = (status.namespace, status.service_id)
                if event.kind == "DELETED":
                    if known.pop(key, None) is not None:
                        yield DeploymentEvent(EventKind.DELETED, status)
                elif key not in known:
                    known[key] = status
                    yield DeploymentEvent(EventKind.ADDED, status)
                elif status_key(known[key]) != status_key(status):
                    known[key] = status
                    yield DeploymentEvent(EventKind.MODIFIED, status)
        finally:
            await events.aclose()

    # -- logs -------------------------------------------------------------------------------

    def _open_log(self, cluster: ResolvedCluster, namespace: str, follow: bool) -> Any:
        """``(pod, query) -> response`` of the pod's ``pods/log`` (blocking, for logs.py)."""
        transport = Transport(cluster.api_client)
        read = float(self.watch_window + 30) if follow else self.call_timeout
        timeout = (min(self.call_timeout, 10.0), read)

        def open_log(pod: str, query: dict[str, Any]) -> Any:
            return transport.stream(
                _core(namespace, "pods", pod) + "/log", query=query, timeout=timeout, accept="*/*"
            )

        return open_log

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        """The pods' logs through ``pods/log`` (logs.py): the retained lines of every running
        pod merged by time, then with ``query.follow`` new lines, including those of pods
        that appear later, seen through one pod watch (reflector rules)."""
        ns = await self._namespace(namespace)
        await self._require_deployment(service_id, ns)
        cluster = await self._resolved()
        pods = await self._pods(service_id, ns)
        running = sorted(
            p["metadata"]["name"]
            for p in pods
            if has_log(p) and query.instance_id in ("", p["metadata"]["name"])
        )
        last: dict[str, datetime] = {}
        tail = merged_tail(self._open_log(cluster, ns, follow=False), running, query, last)
        try:
            async for entry in self._logs_errors(tail, cluster, ns):
                yield entry
        finally:
            await tail.aclose()
        if not query.follow:
            return
        followers = Followers(self._open_log(cluster, ns, follow=True), query, last)
        for pod in running:
            followers.follow(pod)  # a crashed one's follow ends at once; the watch restarts it
        reflector = self._reflector(
            cluster,
            _core(ns, "pods"),
            Target(service_id, ns, f"watch the pods of {ns}/{service_id}"),
            {"labelSelector": service_selector(service_id)},
        )
        watcher = asyncio.create_task(_follow_pods(reflector, followers))
        try:
            while True:
                line = asyncio.ensure_future(followers.queue.get())
                done, _ = await asyncio.wait({line, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if line in done:
                    yield line.result()
                    continue
                line.cancel()
                watcher.result()  # the pod watch failed for good: its error ends the stream
                return
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, InfrastructureProviderError):
                await watcher
            await followers.close()

    async def _logs_errors(
        self, entries: AsyncGenerator[LogEntry, None], cluster: ResolvedCluster, namespace: str
    ) -> AsyncGenerator[LogEntry, None]:
        """``entries`` with the API's errors as provider errors."""
        target = Target(namespace=namespace, what="read pod logs")
        try:
            async for entry in entries:
                yield entry
        except ApiException as exc:
            raise translate_api_error(
                exc, target, alias=self.alias, source=self._describe(cluster)
            ) from exc
        except TRANSPORT_ERRORS as exc:
            raise self._unreachable(exc, target, cluster) from exc

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await self.run_blocking(cluster.api_client.close)


async def _follow_pods(reflector: Reflector, followers: Followers) -> None:
    """Keep ``followers`` on the running pods the watch sees (new ones, restarted ones)."""
    events = reflector.events()
    try:
        async for event in events:
            pods = event.items if isinstance(event, Listed) else [event.obj]
            gone = isinstance(event, Changed) and event.kind == "DELETED"
            for pod in pods:
                name = str(pod["metadata"]["name"])
                if gone:
                    followers.forget(name)
                elif has_log(pod, running_only=True):
                    followers.follow(name)
    finally:
        await events.aclose()
