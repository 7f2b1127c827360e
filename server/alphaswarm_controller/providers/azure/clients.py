"""Settings, the credential chain and the azure-mgmt clients of the azure provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.monitor import MonitorManagementClient

from alphaswarm_core.providers.protocol import InfrastructureProviderUnavailable
from alphaswarm_core.providers.reasons import ErrorReason

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
REQUIRED = ("SUBSCRIPTION_ID", "RESOURCE_GROUP", "LOCATION")


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """``ALPHASWARM_AZURE_*`` (documented in the package docstring)."""

    subscription_id: str
    resource_group: str
    location: str
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    mode: str = "aci"
    aks_cluster: str = ""
    max_parallel: int = 8
    poll_interval: float = 2.0
    missing: tuple[str, ...] = field(default=())
    invalid: tuple[str, ...] = field(default=())

    @classmethod
    def from_env(cls, prefix: str, env: Mapping[str, str]) -> AzureSettings:
        def get(name: str, default: str = "") -> str:
            return env.get(f"{prefix}{name}", default).strip() or default

        invalid: list[str] = []

        def number(name: str, default: float, minimum: float) -> float:
            try:
                return max(minimum, float(get(name, str(default))))
            except ValueError:
                invalid.append(f"{prefix}{name}")
                return default

        mode = get("MODE", "aci").lower()
        needed = REQUIRED if mode == "aci" else REQUIRED[:2]
        return cls(
            subscription_id=get("SUBSCRIPTION_ID"),
            resource_group=get("RESOURCE_GROUP"),
            location=get("LOCATION"),
            arm_endpoint=get("ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT).rstrip("/"),
            mode=mode,
            aks_cluster=get("AKS_CLUSTER"),
            max_parallel=int(number("MAX_PARALLEL", 8, 1)),
            poll_interval=number("POLL_INTERVAL", 2.0, 0.0),
            missing=tuple(f"{prefix}{name}" for name in needed if not get(name)),
            invalid=tuple(invalid),
        )

    def require(self, alias: str) -> None:
        missing = list(self.missing)
        if self.mode == "aks" and not self.aks_cluster:
            missing.append("ALPHASWARM_AZURE_AKS_CLUSTER")
        invalid = list(self.invalid)
        if self.mode not in ("aci", "aks"):
            invalid.append("ALPHASWARM_AZURE_MODE (aci or aks)")
        if invalid:
            raise InfrastructureProviderUnavailable(
                f"invalid azure provider settings: {', '.join(invalid)}",
                reason=ErrorReason.SETTING_INVALID,
                metadata={"provider": alias, "env": ",".join(invalid)},
            )
        if missing:
            raise InfrastructureProviderUnavailable(
                f"the azure provider needs {', '.join(missing)}",
                reason=ErrorReason.SETTING_INVALID,
                metadata={"provider": alias, "env": ",".join(missing)},
            )


def default_credential() -> TokenCredential:
    """azure-identity's chain: environment, workload identity, managed identity, Azure CLI..."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class AzureClients:
    """The SDK clients, built once per provider over one credential.

    ``client_options`` go to every client constructor unchanged (retry_total,
    transport, per_call_policies...); tests use them to reach the emulator over
    plain HTTP.
    """

    def __init__(
        self,
        settings: AzureSettings,
        credential: TokenCredential,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "base_url": settings.arm_endpoint,
            "polling_interval": settings.poll_interval,
            "credential_scopes": [MANAGEMENT_SCOPE],
            **(client_options or {}),
        }
        self.credential = credential
        self.aci = ContainerInstanceManagementClient(
            credential, settings.subscription_id, **options
        )
        self.monitor = MonitorManagementClient(credential, settings.subscription_id, **options)
        self._options = options
        self._settings = settings
        self._aks: ContainerServiceClient | None = None

    @property
    def aks(self) -> ContainerServiceClient:
        if self._aks is None:
            self._aks = ContainerServiceClient(
                self.credential, self._settings.subscription_id, **self._options
            )
        return self._aks

    def close(self) -> None:
        self.aci.close()
        self.monitor.close()
        if self._aks is not None:
            self._aks.close()
