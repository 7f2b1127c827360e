"""The ``ALPHASWARM_AZURE_*`` settings, and the cloud (token audience) of the ARM endpoint.

Settings are read through the provider's typed helpers, so a missing or malformed
one is ``SettingInvalid`` (FAILED_PRECONDITION naming the variable). A token for
Azure Resource Manager must be issued for the audience of the cloud the endpoint
belongs to: the public cloud, Azure China and Azure US Government each have
their own, and ARM refuses a token for another audience (401
``InvalidAuthenticationTokenAudience``). azure-mgmt-core knows the scopes of the
three clouds (``get_arm_endpoints``); azure-identity knows where each cloud's
Microsoft Entra ID authority is (``AzureAuthorityHosts``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from azure.core import AzureClouds
from azure.mgmt.core.tools import get_arm_endpoints

from alphaswarm_core.providers.protocol import InfrastructureProvider, SettingInvalid

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
MODES = ("aci", "aks")

#: ARM host -> its cloud. The endpoints are azure-mgmt-core's own (get_arm_endpoints).
CLOUDS_BY_HOST: dict[str, AzureClouds] = {
    str(urlsplit(get_arm_endpoints(cloud)["resource_manager"]).hostname): cloud
    for cloud in AzureClouds
}
#: Each cloud's Microsoft Entra ID authority (azure.identity.AzureAuthorityHosts' values).
AUTHORITIES: dict[AzureClouds, str] = {
    AzureClouds.AZURE_PUBLIC_CLOUD: "login.microsoftonline.com",
    AzureClouds.AZURE_CHINA_CLOUD: "login.chinacloudapi.cn",
    AzureClouds.AZURE_US_GOVERNMENT: "login.microsoftonline.us",
}
# An explicit scope: an absolute URL ending in "/.default" (the v2 endpoint's form).
_SCOPE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?/\.default")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class ArmCloud:
    """Where ARM is and which token it accepts."""

    endpoint: str
    scope: str
    """The token scope (``<audience>/.default``)."""
    authority: str | None
    """The Entra ID authority host of a known cloud; None: azure-identity's default chain."""
    cloud: str
    """``AZURE_PUBLIC_CLOUD``, ``AZURE_CHINA_CLOUD``, ``AZURE_US_GOVERNMENT`` or ``custom``."""


def arm_cloud(endpoint: str, scope_override: str = "") -> ArmCloud:
    """The token scope and authority for ``endpoint`` (already validated).

    A known cloud's endpoint gets that cloud's ARM scope, which is not always the
    endpoint itself (US Government: ``management.core.usgovcloudapi.net``). Any other
    endpoint (Azure Stack Hub, an emulator) uses ``scope_override`` when set, else
    ``<endpoint>/.default``.
    """
    cloud = CLOUDS_BY_HOST.get(str(urlsplit(endpoint).hostname).lower())
    if scope_override:
        scope = scope_override
    elif cloud is not None:
        scope = str(get_arm_endpoints(cloud)["credential_scopes"][0])
    else:
        scope = f"{endpoint}/.default"
    if cloud is None:
        return ArmCloud(endpoint, scope, None, "custom")
    return ArmCloud(endpoint, scope, AUTHORITIES[cloud], cloud.value)


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """``ALPHASWARM_AZURE_*``, documented in the package docstring."""

    subscription_id: str
    resource_group: str
    arm: ArmCloud
    location: str = ""
    aks_cluster: str = ""
    max_parallel: int = 8
    poll_interval: float = 2.0
    ready_timeout: float = 300.0
    log_poll_interval: float = 2.0

    @classmethod
    def read(cls, provider: InfrastructureProvider, *, mode: str) -> AzureSettings:
        """The settings ``mode`` needs, or ``SettingInvalid`` naming the first bad one."""
        subscription = provider.setting_required("SUBSCRIPTION_ID")
        if not re.fullmatch(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}", subscription):
            raise SettingInvalid(provider.setting_name("SUBSCRIPTION_ID"), "must be a GUID")
        group = provider.setting_required("RESOURCE_GROUP")
        # Resource group names: 1-90 of letters, digits, '_', '-', '.', '(' and ')', not
        # ending in '.' (Azure's naming rules for Microsoft.Resources/resourcegroups).
        if not re.fullmatch(r"[-\w.()]{0,89}[-\w()]", group):
            raise SettingInvalid(
                provider.setting_name("RESOURCE_GROUP"), "is not a valid resource group name"
            )
        return cls(
            subscription_id=subscription,
            resource_group=group,
            arm=_arm(provider),
            location=_location(provider) if mode == "aci" else "",
            aks_cluster=_cluster(provider) if mode == "aks" else "",
            max_parallel=provider.setting_int("MAX_PARALLEL", 8, minimum=1, maximum=64),
            poll_interval=provider.setting_seconds("POLL_INTERVAL", 2.0, maximum=60.0),
            ready_timeout=provider.setting_seconds("READY_TIMEOUT", 300.0, minimum=0.1),
            # The Azure CLI's `az container logs --follow` asks every 2 s; every read is
            # one ARM request per replica, which ARM's read limits count.
            log_poll_interval=provider.setting_seconds(
                "LOG_POLL_INTERVAL", 2.0, minimum=0.1, maximum=60.0
            ),
        )


def _arm(provider: InfrastructureProvider) -> ArmCloud:
    name = provider.setting_name("ARM_ENDPOINT")
    endpoint = provider.setting("ARM_ENDPOINT").strip().rstrip("/") or DEFAULT_ARM_ENDPOINT
    parts = urlsplit(endpoint)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("https", "http")
        or not _HOST.fullmatch(parts.hostname or "")
        or not port_ok
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise SettingInvalid(name, "must be an https URL of Azure Resource Manager, no path")
    scope = provider.setting("ARM_SCOPE").strip()
    if scope and not _SCOPE.fullmatch(scope):
        raise SettingInvalid(
            provider.setting_name("ARM_SCOPE"), "must be a URL ending in '/.default'"
        )
    return arm_cloud(f"{parts.scheme}://{parts.netloc}", scope)


def _location(provider: InfrastructureProvider) -> str:
    location = provider.setting_required("LOCATION")
    if not re.fullmatch(r"[a-z0-9]{1,40}", location):
        raise SettingInvalid(
            provider.setting_name("LOCATION"), "must be an Azure region name, e.g. westeurope"
        )
    return location


def _cluster(provider: InfrastructureProvider) -> str:
    cluster = provider.setting_required("AKS_CLUSTER")
    # Managed cluster names: 1-63 of letters, digits, '_' and '-', starting and ending
    # with a letter or digit (Azure's naming rules for Microsoft.ContainerService).
    if not re.fullmatch(r"[A-Za-z0-9]([-_A-Za-z0-9]{0,61}[A-Za-z0-9])?", cluster):
        raise SettingInvalid(
            provider.setting_name("AKS_CLUSTER"), "is not a valid AKS cluster name"
        )
    return cluster
