"""Google credentials and the async gRPC clients of the gcp provider.

Endpoints: in production every client uses its default endpoint over TLS with
the Application Default Credentials chain. ``ALPHASWARM_GCP_API_ENDPOINT``
(all APIs) or ``ALPHASWARM_GCP_{RUN,SECRETMANAGER,MONITORING,LOGGING,CONTAINER}_ENDPOINT``
(one API) override the endpoint; an override on a loopback address
(127.0.0.1, ::1, localhost) is an emulator and is reached over a plain-text
channel without credentials, any other override (a regional or Private Service
Connect endpoint) keeps TLS and credentials.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
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
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2AsyncClient
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcAsyncIOTransport,
)
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcAsyncIOTransport
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)
from google.oauth2 import service_account

from alphaswarm_core.providers.protocol import SettingInvalid

from .errors import credentials_missing
from .settings import GcpSettings, is_loopback

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


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
        raise SettingInvalid(
            "ALPHASWARM_GCP_PROJECT",
            "is not set and the credentials name no project: set it, or use credentials "
            "that name one (a service-account key, or `gcloud config set project`)",
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

    def _make(self, api: str, client_cls: Any, transport_cls: Any, key: str = "") -> Any:
        """The client of ``api`` (``key``: a second client of the same API's endpoint)."""
        client = self._clients.get(key or api)
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
            self._clients[key or api] = client
        return client

    def run(self) -> run_v2.ServicesAsyncClient:
        client: run_v2.ServicesAsyncClient = self._make(
            "run", run_v2.ServicesAsyncClient, ServicesGrpcAsyncIOTransport
        )
        return client

    def revisions(self) -> run_v2.RevisionsAsyncClient:
        """Cloud Run's Revisions service, on the run endpoint."""
        client: run_v2.RevisionsAsyncClient = self._make(
            "run", run_v2.RevisionsAsyncClient, RevisionsGrpcAsyncIOTransport, "run-revisions"
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

    def logging(self) -> LoggingServiceV2AsyncClient:
        client: LoggingServiceV2AsyncClient = self._make(
            "logging", LoggingServiceV2AsyncClient, LoggingServiceV2GrpcAsyncIOTransport
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
