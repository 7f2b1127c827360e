"""KubernetesProvider: services as Deployments, config as ConfigMaps (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from kubernetes.client.exceptions import ApiException

from alphaswarm_core.call import current_change
from alphaswarm_core.providers.cadence import Cadence
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
    RevisionConflict,
    RevisionNotFound,
)
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    Definition,
    DeploymentEvent,
    DeploymentSpec,
    DeploymentStatus,
    EventKind,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    Revision,
    RolloutState,
    ServiceConfig,
)
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    InfrastructureProvider,
    status_key,
)
from alphaswarm_core.providers.reasons import ErrorReason

from . import revisions
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
    snapshot_manifest,
    snapshot_name,
    snapshot_selector,
)
from .metrics import sample_from_pod_metrics
from .reflector import Changed, Listed, Reflector
from .revisions import CONFIG_HASH_KEY
from .status import deployment_status, recorded_spec
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
    # Revisions: the Deployment's ReplicaSets, and the config snapshot of each.
    ("list", "apps", "replicasets", ""),
    ("list", "", "configmaps", ""),
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


def _wants_auto_rollback(deployment: JsonObj, status: DeploymentStatus) -> bool:
    """The rollout failed, its spec asked for auto_rollback, and it is no automatic
    rollback itself (one that fails is left alone: no loop)."""
    notes = revisions.meta_annotations(deployment)
    return (
        status.rollout is not None
        and status.rollout.state is RolloutState.FAILED
        and notes.get(revisions.AUTO_ROLLBACK_KEY) == "true"
        and notes.get(revisions.AUTOMATIC_KEY) != "true"
    )


def _watch_key(status: DeploymentStatus) -> tuple[object, ...]:
    return (
        status.state,
        status.desired_replicas,
        status.ready_replicas,
        status.message,
        status.revision,
        status.observed_revision,
        status.rollout.state if status.rollout else None,
    )


#: How long a mutating call waits for the Deployment controller to number the revision
#: it made (it syncs in milliseconds; a loaded controller-manager takes longer).
SETTLE_SECONDS = 30.0
SETTLE_POLL_SECONDS = 0.25
CHECKED_WRITE_ATTEMPTS = 3
"""A write carrying the resourceVersion it read meets 409 whenever anyone wrote the
Deployment since, also when only its status moved (the Deployment controller writes it
on every pod change): it reads again, re-checks expected_revision and writes again."""

Written = TypeVar("Written")


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
        pods, replica_sets = await asyncio.gather(
            self._pods(meta["name"], meta["namespace"]), self._replica_sets(deployment)
        )
        return deployment_status(deployment, self.alias, pods, replica_sets)

    async def _replica_sets(self, deployment: JsonObj) -> list[JsonObj]:
        """The Deployment's ReplicaSets (one per revision in its history)."""
        meta = deployment["metadata"]
        items = await self._list_all(
            f"{APPS}/namespaces/{meta['namespace']}/replicasets",
            Target(namespace=meta["namespace"], what="list ReplicaSets"),
            selector=service_selector(meta["name"]),
        )
        return [rs for rs in items if revisions.owned_by(rs, deployment)]

    async def _settle(self, deployment: JsonObj) -> JsonObj:
        """The Deployment once its controller has numbered its latest spec (bounded: after
        SETTLE_SECONDS it is returned as it is, its revision maybe behind)."""
        meta = deployment["metadata"]
        path = _deployments(meta["namespace"], meta["name"])
        target = Target(meta["name"], meta["namespace"], "read Deployment")
        deadline = time.monotonic() + SETTLE_SECONDS
        while not revisions.settled(deployment) and time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_POLL_SECONDS)
            fresh = await self._get(path, target)
            if fresh is None:
                break
            deployment = fresh
        return deployment

    async def _check_revision(
        self, service_id: str, namespace: str, deployment: JsonObj | None
    ) -> JsonObj | None:
        """The caller's expected_revision against the service's revision now: raises
        RevisionConflict when stale. Returns the Deployment as read (settled)."""
        expected = current_change().expected_revision
        if not expected:
            return deployment
        if deployment is not None:
            deployment = await self._settle(deployment)
        actual = revisions.revision_of(deployment) if deployment is not None else 0
        RevisionConflict.check(service_id, namespace, expected, actual)
        return deployment

    async def _checked_write(
        self,
        deployment: JsonObj,
        write: Callable[[JsonObj], Awaitable[Written]],
        *,
        conditional: bool,
    ) -> Written:
        """``write(deployment)``. A ``conditional`` write carries the resourceVersion read,
        and the API server's 409 says someone wrote the Deployment since: it is read again,
        and at a revision other than the caller's expected_revision that is RevisionConflict
        (nothing written); at the same revision (its metadata or status moved) the write
        is made again on what was read, CHECKED_WRITE_ATTEMPTS times in all."""
        meta = deployment["metadata"]
        service_id, ns = str(meta["name"]), str(meta["namespace"])
        for _ in range(CHECKED_WRITE_ATTEMPTS):
            try:
                return await write(deployment)
            except BackendConflictError:
                if not conditional:
                    raise
            fresh = await self._get(
                _deployments(ns, service_id), Target(service_id, ns, "read Deployment again")
            )
            if fresh is None or not _is_ours(fresh):  # deleted since read
                RevisionConflict.check(service_id, ns, current_change().expected_revision, 0)
                raise DeploymentNotFoundError(service_id, ns)
            deployment = await self._settle(fresh)
            await self._check_revision(service_id, ns, deployment)
        raise BackendConflictError(
            f"the Deployment {ns}/{service_id} kept changing concurrently; retry"
        )

    async def _patch_checked(self, deployment: JsonObj, what: str, body: JsonObj) -> JsonObj:
        """A strategic-merge patch of the Deployment, conditional on the resourceVersion
        read when the caller set expected_revision (see _checked_write)."""
        conditional = bool(current_change().expected_revision)

        async def patch(current: JsonObj) -> JsonObj:
            meta = current["metadata"]
            sent = body
            if conditional:
                sent = {**body, "metadata": {**body.get("metadata", {})}}
                sent["metadata"]["resourceVersion"] = meta["resourceVersion"]
            answer = await self._call(
                "PATCH",
                _deployments(meta["namespace"], meta["name"]),
                Target(meta["name"], meta["namespace"], what),
                query={"fieldManager": FIELD_MANAGER},
                body=sent,
                content_type=STRATEGIC,
            )
            return answer.body

        return await self._checked_write(deployment, patch, conditional=conditional)

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
        existing = await self._check_revision(service_id, namespace, existing)
        config, created_config = await self._ensure_configmap(service_id, namespace)
        data = dict(config.get("data") or {})
        data_hash = config_hash(data)
        # Check-and-set: with expected_revision the apply carries the resourceVersion read.
        conditional = existing is not None and bool(current_change().expected_revision)

        async def apply(current: JsonObj | None) -> tuple[JsonObj, bool]:
            """Apply the spec onto ``current``; also whether it makes no new revision."""
            template = revisions.template_annotations(current or {})
            same = template.get(revisions.SPEC_KEY) == revisions.spec_annotation(spec) and (
                template.get(CONFIG_HASH_KEY) == data_hash
            )
            if same:
                change = revisions.kept_annotations(current)  # no new revision: keep its record
            else:
                change = revisions.change_annotations(current_change().change_cause)
            manifest = deployment_manifest(spec, data_hash, change)
            if conditional and current is not None:
                manifest["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            applied = await self._call(
                "PATCH",
                _deployments(namespace, service_id),
                Target(namespace=namespace, what="apply Deployment"),
                query={"fieldManager": FIELD_MANAGER, "force": True},
                body=manifest,
                content_type=APPLY,
            )
            return applied.body, same

        created_deployment = False
        try:
            if existing is None:
                applied, same = await apply(None)
            else:
                applied, same = await self._checked_write(existing, apply, conditional=conditional)
            created_deployment = existing is None
            await self._converge_service(spec)
            if not same:  # a new revision: keep the config it runs with
                await self._snapshot_config(service_id, namespace, data, config)
        except Exception:
            await self._roll_back(service_id, namespace, created_deployment, created_config)
            raise
        return await self._status_with_pods(await self._settle(applied))

    async def _snapshot_config(
        self, service_id: str, namespace: str, data: dict[str, str], config: JsonObj
    ) -> None:
        """Keep ``data`` as the immutable snapshot its hash names (history and rollback),
        then drop the snapshots no ReplicaSet of the service refers to any more."""
        version = str((config.get("metadata") or {}).get("resourceVersion") or "")
        target = Target(namespace=namespace, what="keep the config of the revision")
        with contextlib.suppress(BackendConflictError):  # AlreadyExists: the same data
            await self._call(
                "POST",
                _core(namespace, "configmaps"),
                target,
                body=snapshot_manifest(service_id, namespace, data, config_hash(data), version),
            )
        try:
            await self._prune_snapshots(service_id, namespace, config_hash(data))
        except InfrastructureProviderError as exc:
            log.warning(
                "could not prune the config snapshots of %s/%s: %s",
                namespace,
                service_id,
                exc.message,
            )

    async def _snapshots(self, service_id: str, namespace: str) -> dict[str, JsonObj]:
        """The service's config snapshots by config hash."""
        items = await self._list_all(
            _core(namespace, "configmaps"),
            Target(namespace=namespace, what="list config snapshots"),
            selector=snapshot_selector(service_id),
        )
        prefix = snapshot_name(service_id, "")
        return {
            item["metadata"]["name"][len(prefix) :]: item
            for item in items
            if item["metadata"]["name"].startswith(prefix) and _is_ours(item)
        }

    async def _prune_snapshots(self, service_id: str, namespace: str, keep: str) -> None:
        deployment = await self._get(
            _deployments(namespace, service_id), Target(namespace=namespace, what="read")
        )
        if deployment is None:
            return
        used = {keep, revisions.template_annotations(deployment).get(CONFIG_HASH_KEY, "")}
        for rs in await self._replica_sets(deployment):
            used.add(revisions.template_annotations(rs).get(CONFIG_HASH_KEY, ""))
        for data_hash, item in (await self._snapshots(service_id, namespace)).items():
            if data_hash not in used:
                with contextlib.suppress(ResourceNotFoundError):
                    await self._call(
                        "DELETE",
                        _core(namespace, "configmaps", item["metadata"]["name"]),
                        Target(namespace=namespace, what="prune a config snapshot"),
                    )

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
        deployment = await self._check_revision(service_id, ns, deployment) or deployment
        annotations = deployment["metadata"].get("annotations") or {}
        if annotations.get(STATE_KEY) != "stopped" or deployment["spec"].get("replicas") != 0:
            deployment = await self._patch_checked(
                deployment,
                "stop Deployment",
                {"metadata": {"annotations": {STATE_KEY: "stopped"}}, "spec": {"replicas": 0}},
            )
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
        deployment = await self._check_revision(service_id, ns, deployment) or deployment
        if deployment["spec"].get("replicas") != replicas:
            conditional = bool(current_change().expected_revision)  # check-and-set

            async def scale(current: JsonObj) -> None:
                body: JsonObj = {"spec": {"replicas": replicas}}
                if conditional:
                    body["metadata"] = {"resourceVersion": current["metadata"]["resourceVersion"]}
                await self._call(
                    "PATCH",
                    _deployments(ns, service_id) + "/scale",
                    Target(service_id, ns, "scale Deployment"),
                    query={"fieldManager": FIELD_MANAGER},
                    body=body,
                    content_type=MERGE,
                )

            await self._checked_write(deployment, scale, conditional=conditional)
            deployment = await self._require_deployment(service_id, ns)
        return await self._status_with_pods(deployment)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        ns = await self._namespace(namespace)
        deployment = await self._require_deployment(service_id, ns)
        status = await self._status_with_pods(deployment)
        if await self._auto_rollback(deployment, status):
            status = await self._status_with_pods(await self._require_deployment(service_id, ns))
        return status

    async def _auto_rollback(self, deployment: JsonObj, status: DeploymentStatus) -> bool:
        """With the failed revision's auto_rollback, roll back to the revision the replicas
        still run (else the one before) as a new, automatic revision. Conditional on the
        Deployment as read, so of several controllers seeing the failure one rolls back;
        an automatic revision that fails is not rolled back again. True if it did."""
        if not _wants_auto_rollback(deployment, status) or status.rollout is None:
            return False
        cause = f"auto_rollback: revision {status.revision} failed ({status.rollout.reason})"
        try:
            await self._roll_back_to(
                deployment, status.observed_revision, cause=cause, automatic=True
            )
        except (RevisionConflict, RevisionNotFound, BackendConflictError) as exc:
            log.info("auto_rollback of %s/%s: %s", status.namespace, status.service_id, exc)
            return False
        return True

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
        if ours:
            deployment = await self._check_revision(service_id, ns, deployment)
        await self._delete_own_service(service_id, ns)
        await self._delete_own_configmap(service_id, ns)
        for item in (await self._snapshots(service_id, ns)).values():
            with contextlib.suppress(ResourceNotFoundError):
                await self._call(
                    "DELETE",
                    _core(ns, "configmaps", item["metadata"]["name"]),
                    Target(namespace=ns, what="delete a config snapshot"),
                )
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
                    "preconditions": {
                        "uid": deployment["metadata"]["uid"],
                        **(
                            {"resourceVersion": deployment["metadata"]["resourceVersion"]}
                            if current_change().expected_revision
                            else {}
                        ),
                    },
                },
            )
        return True

    # -- revisions --------------------------------------------------------------------------

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        ns = await self._namespace(namespace)
        deployment = await self._settle(await self._require_deployment(service_id, ns))
        status = deployment_status(deployment, self.alias)
        spec = recorded_spec(deployment) or DeploymentSpec(
            service_id, ns, image=status.image, replicas=status.desired_replicas
        )
        config = await self.get_config(service_id, namespace=ns)
        return Definition(spec, dict(config.data), config.version, status.revision)

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        """One revision per ReplicaSet of the Deployment, newest first: the current one and
        up to REVISION_HISTORY_LIMIT (10) before it, as the controller keeps them."""
        ns = await self._namespace(namespace)
        deployment = await self._settle(await self._require_deployment(service_id, ns))
        replica_sets, snapshots = await asyncio.gather(
            self._replica_sets(deployment), self._snapshots(service_id, ns)
        )
        found = [revisions.revision_from(rs, service_id, ns, snapshots) for rs in replica_sets]
        return sorted((r for r in found if r is not None), key=lambda r: -r.number)

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """What ``kubectl rollout undo`` does: the chosen revision's ReplicaSet template
        becomes the Deployment's (the controller re-uses that ReplicaSet and numbers it
        anew), with its config restored first; conditional on the Deployment as read."""
        ns = await self._namespace(namespace)
        deployment = await self._settle(await self._require_deployment(service_id, ns))
        await self._check_revision(service_id, ns, deployment)  # stale: RevisionConflict
        cause = current_change().change_cause

        async def roll_back(current: JsonObj) -> JsonObj:
            return await self._roll_back_to(current, to_revision, cause=cause, automatic=False)

        # Its PUT carries the resourceVersion read, with or without expected_revision.
        deployment = await self._checked_write(deployment, roll_back, conditional=True)
        return await self._status_with_pods(await self._settle(deployment))

    async def _roll_back_to(
        self, deployment: JsonObj, to_revision: int, *, cause: str, automatic: bool
    ) -> JsonObj:
        """Make revision ``to_revision`` (0: the newest before the current one) run again as
        a new revision; BackendConflictError when the Deployment changed since read."""
        meta = deployment["metadata"]
        service_id, ns = str(meta["name"]), str(meta["namespace"])
        current = revisions.revision_of(deployment)
        replica_sets = await self._replica_sets(deployment)
        by_number = {revisions.revision_of(rs): rs for rs in replica_sets}
        if not to_revision:
            to_revision = max((n for n in by_number if 0 < n < current), default=0)
        chosen = by_number.get(to_revision)
        if chosen is None or not to_revision or to_revision == current:
            raise RevisionNotFound(service_id, ns, to_revision)
        template = json.loads(json.dumps(chosen["spec"]["template"]))
        (template["metadata"].get("labels") or {}).pop(revisions.POD_TEMPLATE_HASH, None)
        undo = await self._restore_config(service_id, ns, revisions.template_annotations(chosen))
        body = {k: v for k, v in deployment.items() if k != "status"}
        body["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        body["metadata"]["annotations"] = {
            **(meta.get("annotations") or {}),
            **revisions.change_annotations(cause, rollback_of=to_revision, automatic=automatic),
        }
        body["spec"] = {**deployment["spec"], "template": template}
        # A PUT carrying the resourceVersion read: 409 if anyone changed it since.
        try:
            written = await self._call(
                "PUT",
                _deployments(ns, service_id),
                Target(service_id, ns, f"roll back to revision {to_revision}"),
                query={"fieldManager": FIELD_MANAGER},
                body=body,
            )
        except InfrastructureProviderError:
            # The rollback did not happen: its config must not stay (pods started later
            # would read it while the template names the previous one).
            if undo is not None and not await self._put_back(
                undo, Target(service_id, ns, "put the config back")
            ):
                await self._check_revision_config_live(service_id, ns)
            raise
        spec = recorded_spec(written.body)
        if spec is not None:
            await self._converge_service(spec)
        return written.body

    async def _restore_config(
        self, service_id: str, namespace: str, template: Mapping[str, str]
    ) -> JsonObj | None:
        """Put the config a revision ran with (its snapshot) back into the service's
        ConfigMap, so its pods read it again. Returns what undoes it (None: unchanged):
        the ConfigMap as written, with the data it held before."""
        wanted = template.get(CONFIG_HASH_KEY, "")
        path = _core(namespace, "configmaps", configmap_name(service_id))
        target = Target(service_id, namespace, "restore the config of the revision")
        config = await self._get(path, target)
        if config is None or config_hash(config.get("data") or {}) == wanted:
            return None
        snapshot = await self._get(
            _core(namespace, "configmaps", snapshot_name(service_id, wanted)), target
        )
        if snapshot is None:
            raise BackendRejectedError(
                f"the config of that revision of {namespace}/{service_id} is no longer kept",
                reason=ErrorReason.CONFIG_UNREADABLE,
                metadata={"service_id": service_id, "namespace": namespace},
            )
        before = dict(config.get("data") or {})
        config["data"] = dict(snapshot.get("data") or {})
        written = await self._call("PUT", path, target, body=config)  # conditional on its version
        return {**written.body, "data": before}

    async def _put_back(self, config: JsonObj, target: Target) -> bool:
        """PUT ``config`` (a ConfigMap as this provider wrote it, with the data it held
        before) conditional on that write's resourceVersion; whether it was. If someone
        wrote over it since, their write was built on it and stays."""
        path = _core(config["metadata"]["namespace"], "configmaps", config["metadata"]["name"])
        try:
            await self._call("PUT", path, target, body=config)
        except InfrastructureProviderError:
            return False
        return True

    async def _check_revision_config_live(self, service_id: str, namespace: str) -> None:
        """_check_revision after a config this change wrote could not be put back: a stale
        expected_revision is then a RevisionConflict that says the config is live (the
        caller would otherwise read "nothing changed"). Fresh from the server: the
        conflict that led here may be swallowed by a retry of the write."""
        fresh = await self._get(
            _deployments(namespace, service_id), Target(service_id, namespace, "read Deployment")
        )
        try:
            await self._check_revision(service_id, namespace, fresh)
        except RevisionConflict as stale:
            raise stale.with_config_live() from None

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
        checked: JsonObj | None = None
        if current_change().expected_revision:
            checked = await self._check_revision(
                service_id, ns, await self._require_deployment(service_id, ns)
            )
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
            try:
                await self._roll_out(service_id, ns, merged, checked)
            except RevisionConflict as conflict:
                # The Deployment moved on meanwhile: put the config back as it was.
                if not await self._put_back({**written.body, "data": data}, target):
                    raise conflict.with_config_live() from None
                raise
            await self._snapshot_config(service_id, ns, merged, written.body)
            new_data = dict(written.body.get("data") or {})
            new_version = str(written.body["metadata"]["resourceVersion"])
            return ServiceConfig(service_id, ns, new_data, new_version)
        raise BackendConflictError(
            f"the config of {ns}/{service_id} kept changing concurrently; retry"
        )

    async def _roll_out(
        self,
        service_id: str,
        namespace: str,
        data: dict[str, str],
        checked: JsonObj | None = None,
    ) -> None:
        """Change the pod template so the Deployment replaces its pods onto the new config:
        a new revision, recorded with the change cause. ``checked`` is the Deployment the
        caller's expected_revision was checked against: the patch is conditional on it."""
        body: JsonObj = {
            "metadata": {
                "annotations": revisions.change_annotations(current_change().change_cause)
            },
            "spec": {
                "template": {"metadata": {"annotations": {CONFIG_HASH_KEY: config_hash(data)}}}
            },
        }

        async def patch(current: JsonObj | None) -> None:
            sent = body
            if current is not None:  # check-and-set (see _checked_write)
                version = current["metadata"]["resourceVersion"]
                sent = {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
            await self._call(
                "PATCH",
                _deployments(namespace, service_id),
                Target(namespace=namespace, what="roll out the new config"),
                query={"fieldManager": CONFIG_FIELD_MANAGER},
                body=sent,
                content_type=STRATEGIC,
            )

        with contextlib.suppress(ResourceNotFoundError):  # no Deployment: nothing runs it
            if checked is None:
                await patch(None)
            else:
                await self._checked_write(checked, patch, conditional=True)

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
        cadence = Cadence(interval_seconds)
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
            await cadence.wait()

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
                if _wants_auto_rollback(obj, status):  # the rollback comes as the next event
                    await self._auto_rollback(obj, await self._status_with_pods(obj))
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
