"""Settings, Google credentials and the async gRPC clients of the gcp provider.

Endpoints: in production every client uses its default endpoint over TLS with
the Application Default Credentials chain. ``ALPHASWARM_GCP_API_ENDPOINT``
(all APIs) or ``ALPHASWARM_GCP_{RUN,SECRETMANAGER,MONITORING,CONTAINER}_ENDPOINT``
(one API) override the endpoint; an override on a loopback address
(127.0.0.1, ::1, localhost) is an emulator and is reached over a plain-text
channel without credentials, any other override (a regional or Private Service
Connect endpoint) keeps TLS and credentials.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.oauth2.credentials
import grpc
from google.api_core.client_options import ClientOptions
from google.cloud import container_v1, monitoring_v3, run_v2, secretmanager_v1
from google.cloud.container_v1.services.cluster_manager.transports import (
    ClusterManagerGrpcAsyncIOTransport,
)
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)
from google.oauth2 import service_account

from alphaswarm_core.providers.protocol import (
    FieldViolation,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
)

from .errors import credentials_missing

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
APIS = ("run", "secretmanager", "monitoring", "container")
MODES = ("cloudrun", "gke")
# Cloud Run regions are <area>-<direction><digit(s)>: us-central1, europe-west4,
# northamerica-northeast2, me-central1, africa-south1.
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")
_PROJECT = re.compile(r"([a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")


def is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else endpoint
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GcpSettings:
    """``ALPHASWARM_GCP_*`` settings (see docs/providers/gcp.md)."""

    project: str = ""
    region: str = "us-central1"
    mode: str = "cloudrun"
    endpoints: Mapping[str, str] = field(default_factory=dict)
    poll_interval: float = 1.0
    operation_timeout: float = 300.0
    metrics_window: float = 300.0
    gke_cluster: str = ""
    gke_location: str = ""

    @classmethod
    def load(cls, setting: Callable[[str, str], str]) -> GcpSettings:
        common = setting("API_ENDPOINT", "")
        endpoints = {
            api: value
            for api in APIS
            if (value := setting(f"{api.upper()}_ENDPOINT", "") or common)
        }
        return cls(
            project=setting("PROJECT", ""),
            region=setting("REGION", "us-central1"),
            mode=setting("MODE", "cloudrun").lower(),
            endpoints=endpoints,
            poll_interval=_number(setting, "POLL_INTERVAL", 1.0),
            operation_timeout=_number(setting, "OPERATION_TIMEOUT", 300.0),
            metrics_window=_number(setting, "METRICS_WINDOW", 300.0),
            gke_cluster=setting("GKE_CLUSTER", ""),
            gke_location=setting("GKE_LOCATION", ""),
        )

    def validate(self) -> None:
        """Raise InvalidSpecError naming each bad setting, before any API call."""
        violations = []
        if not _REGION.fullmatch(self.region):
            violations.append(
                FieldViolation(
                    "ALPHASWARM_GCP_REGION",
                    f"{self.region[:64]!r} is not a Google Cloud region (e.g. us-central1)",
                )
            )
        if self.project and not _PROJECT.fullmatch(self.project):
            violations.append(FieldViolation("ALPHASWARM_GCP_PROJECT", "not a project id"))
        if self.mode not in MODES:
            violations.append(FieldViolation("ALPHASWARM_GCP_MODE", f"one of {', '.join(MODES)}"))
        if self.mode == "gke" and not self.gke_cluster:
            violations.append(
                FieldViolation("ALPHASWARM_GCP_GKE_CLUSTER", "required when the mode is gke")
            )
        if violations:
            raise InvalidSpecError(violations)

    @property
    def emulated(self) -> bool:
        return bool(self.endpoints) and all(is_loopback(e) for e in self.endpoints.values())


def _number(setting: Callable[[str, str], str], name: str, default: float) -> float:
    raw = setting(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InvalidSpecError.single(f"ALPHASWARM_GCP_{name}", "a positive number of seconds")
    return value


def load_credentials(
    env: Mapping[str, str], settings: GcpSettings
) -> tuple[google.auth.credentials.Credentials, str]:
    """Credentials and project: blocking (reads files, may ask the metadata server).

    GOOGLE_APPLICATION_CREDENTIALS is read from the provider's environment first,
    then google-auth's ADC chain (gcloud's file, the GCE/GKE metadata server that
    Workload Identity serves). Against a loopback emulator without credentials,
    anonymous credentials are used, as Google's own emulators allow.
    """
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    try:
        if path:
            if not os.path.isfile(path):
                raise credentials_missing("GOOGLE_APPLICATION_CREDENTIALS names no readable file")
            credentials, project = _from_file(path)
        else:
            credentials, project = google.auth.default(scopes=SCOPES)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        if settings.emulated and not path:
            credentials, project = google.auth.credentials.AnonymousCredentials(), None  # type: ignore[no-untyped-call]
        else:
            raise credentials_missing(type(exc).__name__) from exc
    resolved = settings.project or project or ""
    if not resolved:
        raise InfrastructureProviderUnavailable(
            "no Google Cloud project: set ALPHASWARM_GCP_PROJECT, or use credentials that "
            "name one (a service-account key, or `gcloud config set project`)",
            reason="PROJECT_MISSING",
            metadata={"env": "ALPHASWARM_GCP_PROJECT"},
        )
    return credentials, resolved


def _from_file(path: str) -> tuple[google.auth.credentials.Credentials, str | None]:
    """Load a key file by its declared type (google-auth's generic loader is deprecated)."""
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError) as exc:
        raise credentials_missing("GOOGLE_APPLICATION_CREDENTIALS is not a JSON key file") from exc
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        return (
            service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=SCOPES
            ),
            info.get("project_id"),
        )
    if kind == "authorized_user":
        return (
            google.oauth2.credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=SCOPES
            ),
            info.get("quota_project_id"),
        )
    # external_account (Workload Identity Federation) and others: the operator chose the file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded: tuple[google.auth.credentials.Credentials, str | None] = (
            google.auth.load_credentials_from_file(path, scopes=SCOPES)  # type: ignore[no-untyped-call]
        )
    return loaded


class GcpClients:
    """One async client per API, created on first use inside the running event loop."""

    def __init__(
        self, settings: GcpSettings, credentials: google.auth.credentials.Credentials
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self._clients: dict[str, Any] = {}

    def _make(self, api: str, client_cls: Any, transport_cls: Any) -> Any:
        client = self._clients.get(api)
        if client is None:
            endpoint = self.settings.endpoints.get(api, "")
            if endpoint and is_loopback(endpoint):
                channel = grpc.aio.insecure_channel(endpoint)
                client = client_cls(transport=transport_cls(channel=channel))
            else:
                options = ClientOptions(api_endpoint=endpoint) if endpoint else None
                client = client_cls(
                    credentials=self.credentials, client_options=options, transport="grpc_asyncio"
                )
            self._clients[api] = client
        return client

    def run(self) -> run_v2.ServicesAsyncClient:
        client: run_v2.ServicesAsyncClient = self._make(
            "run", run_v2.ServicesAsyncClient, ServicesGrpcAsyncIOTransport
        )
        return client

    def secrets(self) -> secretmanager_v1.SecretManagerServiceAsyncClient:
        client: secretmanager_v1.SecretManagerServiceAsyncClient = self._make(
            "secretmanager",
            secretmanager_v1.SecretManagerServiceAsyncClient,
            SecretManagerServiceGrpcAsyncIOTransport,
        )
        return client

    def monitoring(self) -> monitoring_v3.MetricServiceAsyncClient:
        client: monitoring_v3.MetricServiceAsyncClient = self._make(
            "monitoring", monitoring_v3.MetricServiceAsyncClient, MetricServiceGrpcAsyncIOTransport
        )
        return client

    def container(self) -> container_v1.ClusterManagerAsyncClient:
        client: container_v1.ClusterManagerAsyncClient = self._make(
            "container", container_v1.ClusterManagerAsyncClient, ClusterManagerGrpcAsyncIOTransport
        )
        return client

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.transport.close()
