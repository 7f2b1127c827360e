"""The credential chain and the azure-mgmt clients, shared by both backend classes.

``AzureAccess`` is what ``AciProvider`` and ``AksProvider`` have in common: the
settings, one credential (azure-identity's default chain unless one is given),
the clients built over it on first use, and the probe ``health`` makes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.monitor import MonitorManagementClient

from alphaswarm_core.providers.protocol import InfrastructureProvider

from .errors import azure_errors, credentials_missing
from .retry import DeadlineRetryPolicy
from .settings import AzureSettings


def default_credential(authority: str | None) -> TokenCredential:
    """azure-identity's chain: environment, workload identity, managed identity, Azure CLI...

    ``authority`` is the Entra ID host of the ARM endpoint's cloud, unless the operator
    chose one with ``AZURE_AUTHORITY_HOST`` (which azure-identity reads itself).
    """
    from azure.identity import DefaultAzureCredential

    if authority is None or os.environ.get("AZURE_AUTHORITY_HOST"):
        return DefaultAzureCredential()
    return DefaultAzureCredential(authority=authority)


class AzureClients:
    """The SDK clients, each built on first use over one credential.

    ``client_options`` go to every client constructor unchanged (transport,
    per_call_policies...); tests use them to reach the emulator over plain HTTP.
    """

    def __init__(
        self,
        settings: AzureSettings,
        credential: TokenCredential,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.credential = credential
        self._settings = settings
        self._options: dict[str, Any] = {
            "base_url": settings.arm.endpoint,
            "credential_scopes": [settings.arm.scope],
            "polling_interval": settings.poll_interval,
            "retry_policy": DeadlineRetryPolicy(),
            **(client_options or {}),
        }
        self._aci: ContainerInstanceManagementClient | None = None
        self._monitor: MonitorManagementClient | None = None
        self._aks: ContainerServiceClient | None = None

    @property
    def aci(self) -> ContainerInstanceManagementClient:
        if self._aci is None:
            self._aci = ContainerInstanceManagementClient(
                self.credential, self._settings.subscription_id, **self._options
            )
        return self._aci

    @property
    def monitor(self) -> MonitorManagementClient:
        if self._monitor is None:
            self._monitor = MonitorManagementClient(
                self.credential, self._settings.subscription_id, **self._options
            )
        return self._monitor

    @property
    def aks(self) -> ContainerServiceClient:
        if self._aks is None:
            self._aks = ContainerServiceClient(
                self.credential, self._settings.subscription_id, **self._options
            )
        return self._aks

    def close(self) -> None:
        for client in (self._aci, self._monitor, self._aks):
            if client is not None:
                client.close()


class AzureAccess:
    """Settings, credential and clients of one provider instance, created on first use."""

    def __init__(
        self,
        provider: InfrastructureProvider,
        mode: str,
        credential: TokenCredential | None,
        client_options: Mapping[str, Any] | None,
    ) -> None:
        self._provider = provider
        self._mode = mode
        self._given_credential = credential
        self._client_options = dict(client_options or {})
        self._settings: AzureSettings | None = None
        self._clients: AzureClients | None = None

    @property
    def settings(self) -> AzureSettings:
        """Read once; ``SettingInvalid`` (naming the variable) until the operator fixes it."""
        if self._settings is None:
            self._settings = AzureSettings.read(self._provider, mode=self._mode)
        return self._settings

    @property
    def clients(self) -> AzureClients:
        if self._clients is None:
            settings = self.settings
            credential = self._given_credential or default_credential(settings.arm.authority)
            self._clients = AzureClients(settings, credential, self._client_options)
        return self._clients

    def errors(self) -> AbstractContextManager[None]:
        """A context manager translating SDK exceptions into provider errors."""
        return azure_errors(
            alias=self._provider.provider_alias, resource_group=self.settings.resource_group
        )

    async def probe_token(self) -> None:
        """Ask for an ARM token; no credential source (or one that refuses) is
        CREDENTIALS_MISSING, network errors towards Entra ID are UNAVAILABLE."""
        clients = self.clients
        with self.errors():
            try:
                await self._provider.run_blocking(
                    clients.credential.get_token, self.settings.arm.scope
                )
            except ClientAuthenticationError as error:
                raise credentials_missing(self._provider.provider_alias) from error

    def details(self) -> dict[str, str]:
        settings = self.settings
        return {
            "mode": self._mode,
            "subscription_id": settings.subscription_id,
            "resource_group": settings.resource_group,
            "arm_endpoint": settings.arm.endpoint,
            "cloud": settings.arm.cloud,
        }

    def close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is None:
            return
        clients.close()
        if self._given_credential is None:
            closer = getattr(clients.credential, "close", None)
            if callable(closer):
                closer()
