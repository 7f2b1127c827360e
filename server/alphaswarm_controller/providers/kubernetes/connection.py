"""Where the cluster is and how to authenticate: an injected connection, kubeconfig or in-cluster.

The cloud providers (EKS, AKS, GKE) learn a managed cluster's endpoint, CA and
a short-lived token from their own APIs and hand them over as a
``ClusterConnection``; a standalone ``kubernetes`` provider reads kubeconfig
(``KUBECONFIG``, context ``ALPHASWARM_KUBERNETES_CONTEXT``) or the in-cluster
service account. Either way the result is one configured ``ApiClient`` plus a
description that names the source (never a credential) for error messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes.config import incluster_config, kube_config
from kubernetes.config.config_exception import ConfigException

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.reasons import ErrorReason

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFIG_HINT = (
    "set KUBECONFIG (and ALPHASWARM_KUBERNETES_CONTEXT to pick a context), "
    "or run the controller inside a cluster with a service account"
)


@dataclass(frozen=True, slots=True)
class ClusterConnection:
    """An API server endpoint and the credentials to call it.

    ``ca_data`` is the PEM bundle that signs the server certificate (None: the
    system trust store). ``token`` is a bearer token; ``token_provider``, when
    given, is called for a fresh token whenever the client builds a request,
    so short-lived tokens (EKS, GKE) never go stale. Neither appears in repr.
    """

    endpoint: str
    ca_data: bytes | None = None
    token: str | None = field(default=None, repr=False)
    namespace: str = "default"
    verify: bool = True
    token_provider: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    description: str = ""
    """How this connection was found, for messages (e.g. ``EKS cluster prod``)."""


@dataclass(frozen=True, slots=True)
class ResolvedCluster:
    """A ready client and what to say about it."""

    api_client: Any
    endpoint: str
    namespace: str
    source: str
    """Human-readable origin: ``kubeconfig /path (context x)``, ``in-cluster``..."""


def _retries() -> urllib3.Retry:
    # Connection errors are retried once quickly; anything that reached the
    # server is not (a 503/429 with Retry-After included: the caller gets
    # UNAVAILABLE with that hint instead of a hidden wait), so a failure
    # surfaces within the caller's deadline.
    return urllib3.Retry(
        total=1,
        connect=1,
        read=0,
        redirect=0,
        status=0,
        other=0,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def _configuration() -> Any:
    configuration = k8s_client.Configuration()
    configuration.retries = _retries()
    configuration.connection_pool_maxsize = 32
    return configuration


def client_for_connection(connection: ClusterConnection) -> ResolvedCluster:
    configuration = _configuration()
    configuration.host = connection.endpoint.rstrip("/")
    configuration.verify_ssl = connection.verify
    if connection.ca_data:
        configuration.ca_cert_data = connection.ca_data.decode()
    if connection.token_provider is not None:
        provider = connection.token_provider

        def refresh(config: Any) -> None:
            config.api_key["BearerToken"] = f"Bearer {provider()}"

        configuration.refresh_api_key_hook = refresh
        configuration.api_key["BearerToken"] = "Bearer "
    elif connection.token:
        configuration.api_key["BearerToken"] = f"Bearer {connection.token}"
    return ResolvedCluster(
        api_client=k8s_client.ApiClient(configuration),
        endpoint=configuration.host,
        namespace=connection.namespace or "default",
        source=connection.description or f"cluster connection to {configuration.host}",
    )


def default_kubeconfig(env: Mapping[str, str]) -> str | None:
    """``KUBECONFIG`` if set, else ``~/.kube/config`` if it exists."""
    if env.get("KUBECONFIG"):
        return env["KUBECONFIG"]
    home = env.get("HOME") or os.path.expanduser("~")
    candidate = Path(home) / ".kube" / "config"
    return str(candidate) if candidate.is_file() else None


def client_from_environment(env: Mapping[str, str]) -> ResolvedCluster:
    """kubeconfig when one is configured, else the in-cluster service account."""
    namespace_override = env.get("ALPHASWARM_KUBERNETES_NAMESPACE", "")
    kubeconfig = default_kubeconfig(env)
    context = env.get("ALPHASWARM_KUBERNETES_CONTEXT") or None
    configuration = _configuration()
    if kubeconfig:
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
            contexts, active = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                kubeconfig
            )
        except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
            raise InfrastructureProviderUnavailable(
                f"cannot load Kubernetes config from KUBECONFIG={kubeconfig} "
                f"(context {context or '(current-context)'}): {_safe(exc)}",
                reason=ErrorReason.SETTING_INVALID,
                metadata={"kubeconfig": kubeconfig, "context": context or ""},
            ) from exc
        chosen = next((c for c in contexts if c.get("name") == context), active) or {}
        namespace = (chosen.get("context") or {}).get("namespace") or "default"
        source = f"KUBECONFIG={kubeconfig}, context {chosen.get('name', '(current-context)')}"
    elif env.get("KUBERNETES_SERVICE_HOST"):
        try:
            loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=incluster_config.SERVICE_TOKEN_FILENAME,
                cert_filename=incluster_config.SERVICE_CERT_FILENAME,
                environ=env,
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise InfrastructureProviderUnavailable(
                f"in-cluster Kubernetes config is incomplete: {_safe(exc)}",
                reason=ErrorReason.CREDENTIALS_MISSING,
            ) from exc
        namespace = (
            IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
            if IN_CLUSTER_NAMESPACE_FILE.is_file()
            else "default"
        )
        source = "in-cluster service account"
    else:
        raise credentials_missing()
    configuration.retries = _retries()
    return ResolvedCluster(
        api_client=k8s_client.ApiClient(configuration),
        endpoint=configuration.host,
        namespace=namespace_override or namespace,
        source=source,
    )


def credentials_missing() -> InfrastructureProviderUnavailable:
    return InfrastructureProviderUnavailable(
        f"no Kubernetes cluster is configured: {CONFIG_HINT}",
        reason=ErrorReason.CREDENTIALS_MISSING,
        metadata={"env": "KUBECONFIG,ALPHASWARM_KUBERNETES_CONTEXT,KUBERNETES_SERVICE_HOST"},
    )


def _safe(exc: BaseException) -> str:
    """The first line of an error, short: config errors can quote file content."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
