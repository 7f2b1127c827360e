"""Health, settings, clouds and credentials of the azure provider; the backend selector."""

from __future__ import annotations

import pytest

from alphaswarm_controller.providers.azure import AciProvider, AksProvider, select_backend
from alphaswarm_controller.providers.azure.settings import arm_cloud
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    InfrastructureProviderUnavailable,
    SettingInvalid,
)
from alphaswarm_core.providers.registry import Registry
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import (
    FakeCredential,
    SendTo,
    client_options,
    emulator_env,
    make_provider,
)
from tests.fakes.faults import Kind

US_GOV = "https://management.usgovcloudapi.net"
CHINA = "https://management.chinacloudapi.cn"


async def test_health_gets_a_token_for_the_endpoint_and_lists(arm: ArmEmulator) -> None:
    credential = FakeCredential()
    provider = make_provider(arm, AciProvider, credential=credential)
    health = await provider.health()
    assert health.healthy
    assert (health.alias, health.kind) == ("azure", "azure")
    assert health.details["resource_group"] == "alphaswarm-rg"
    assert health.details["cloud"] == "custom"
    # Two tokens: health's own probe (never sent), then the one the ARM client sends.
    assert credential.scopes == [f"{arm.base_url}/.default"] * 2
    assert arm.count("GET", r"/containerGroups$") == 1
    assert arm.tokens == [f"aud={arm.base_url};n=2"] == credential.issued[1:]
    await provider.close()


async def test_each_request_carries_the_token_the_credential_issued(arm: ArmEmulator) -> None:
    """A token still valid is reused for every request; none is made up or dropped."""
    credential = FakeCredential()
    provider = make_provider(arm, AciProvider, credential=credential)
    try:
        for _ in range(3):
            assert (await provider.health()).healthy
    finally:
        await provider.close()
    assert arm.count("GET", r"/containerGroups$") == 3
    # Each health call probes a token of its own first (n=1, 3, 4); the client's n=2
    # serves every request.
    assert len(credential.issued) == 4
    assert arm.tokens == [f"aud={arm.base_url};n=2"] * 3


async def test_a_token_about_to_expire_is_replaced_before_the_next_request(
    arm: ArmEmulator,
) -> None:
    """azure-core renews a token that expires within five minutes: with one-second
    tokens, each request carries a new token, the latest one issued, never an old one."""
    credential = FakeCredential(lifetime_seconds=1)
    provider = make_provider(arm, AciProvider, credential=credential)
    try:
        for _ in range(3):
            assert (await provider.health()).healthy
    finally:
        await provider.close()
    assert arm.count("GET", r"/containerGroups$") == 3
    # Probe, then the client's renewed token, per call: the requests carry n=2, 4, 6.
    assert credential.issued == [f"aud={arm.base_url};n={n}" for n in range(1, 7)]
    assert arm.tokens == credential.issued[1::2]
    assert set(credential.scopes) == {f"{arm.base_url}/.default"}


@pytest.mark.parametrize(
    ("endpoint", "audience", "cloud", "authority"),
    [
        # US Government: ARM at management.usgovcloudapi.net, tokens for management.core...
        (US_GOV, "https://management.core.usgovcloudapi.net", "AZURE_US_GOVERNMENT",
         "login.microsoftonline.us"),
        (CHINA, "https://management.chinacloudapi.cn", "AZURE_CHINA_CLOUD",
         "login.chinacloudapi.cn"),
        ("https://management.azure.com", "https://management.azure.com", "AZURE_PUBLIC_CLOUD",
         "login.microsoftonline.com"),
    ],
)  # fmt: skip
async def test_sovereign_clouds_get_a_token_for_their_own_audience(
    endpoint: str, audience: str, cloud: str, authority: str
) -> None:
    """ARM refuses a token for another cloud's audience (401); the scope follows the
    endpoint's cloud."""
    with ArmEmulator(audiences=(audience,)) as arm:
        credential = FakeCredential()
        host = endpoint.removeprefix("https://")
        provider = make_provider(
            arm,
            AciProvider,
            env=emulator_env(arm, ALPHASWARM_AZURE_ARM_ENDPOINT=endpoint),
            credential=credential,
            options=client_options(SendTo(host, arm.base_url)),
        )
        health = await provider.health()
        assert health.healthy, health.message
        assert health.details["cloud"] == cloud
        assert credential.scopes == [f"{audience}/.default"] * 2  # the probe, the client
        assert provider.settings.arm.authority == authority
        assert arm.count("GET", r"/containerGroups$") == 1
        assert arm.tokens == [f"aud={audience};n=2"]
        await provider.close()


async def test_a_token_for_the_wrong_audience_is_refused_by_arm() -> None:
    with ArmEmulator(audiences=("https://management.core.usgovcloudapi.net",)) as arm:
        provider = make_provider(arm, AciProvider)  # a custom endpoint: its own audience
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.health()
        assert caught.value.reason == "CREDENTIALS_INVALID"
        assert "InvalidAuthenticationTokenAudience" in caught.value.message
        await provider.close()


async def test_an_explicit_scope_serves_endpoints_outside_the_known_clouds() -> None:
    with ArmEmulator(audiences=("https://management.azurestack.example/tenant-1",)) as arm:
        credential = FakeCredential()
        provider = make_provider(
            arm,
            AciProvider,
            credential=credential,
            ALPHASWARM_AZURE_ARM_SCOPE="https://management.azurestack.example/tenant-1/.default",
        )
        assert (await provider.health()).healthy
        scope = "https://management.azurestack.example/tenant-1/.default"
        assert credential.scopes == [scope] * 2  # the probe, the client
        assert arm.tokens == ["aud=https://management.azurestack.example/tenant-1;n=2"]
        await provider.close()


def test_arm_cloud_of_each_endpoint() -> None:
    assert arm_cloud(US_GOV).scope == "https://management.core.usgovcloudapi.net/.default"
    assert arm_cloud("https://MANAGEMENT.chinacloudapi.cn").cloud == "AZURE_CHINA_CLOUD"
    custom = arm_cloud("https://arm.local:8443")
    assert (custom.scope, custom.authority, custom.cloud) == (
        "https://arm.local:8443/.default",
        None,
        "custom",
    )


async def test_missing_credentials_name_every_source(arm: ArmEmulator) -> None:
    provider = make_provider(arm, AciProvider, credential=FakeCredential(fail=True))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    error = caught.value
    assert error.reason == "CREDENTIALS_MISSING"
    assert error.code == "FAILED_PRECONDITION"
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "managed identity",
        "az login",
    ):
        assert name in error.message
    assert arm.requests == []


async def test_default_chain_without_any_source_is_credentials_missing(
    arm: ArmEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """The real DefaultAzureCredential, with no environment, no az CLI and no IMDS here."""
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_USERNAME",
        "AZURE_AUTHORITY_HOST",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    # IMDS is unreachable on this machine; point the probe at a closed local port.
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")
    provider = AciProvider(env=emulator_env(arm), client_options=client_options())
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CREDENTIALS_MISSING"
    await provider.close()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ALPHASWARM_AZURE_RESOURCE_GROUP", ""),
        ("ALPHASWARM_AZURE_SUBSCRIPTION_ID", "not-a-guid"),
        ("ALPHASWARM_AZURE_LOCATION", "West Europe\n"),
        ("ALPHASWARM_AZURE_ARM_ENDPOINT", "https://management.azure.com/evil?x=1"),
        ("ALPHASWARM_AZURE_ARM_ENDPOINT", "ftp://management.azure.com"),
        ("ALPHASWARM_AZURE_ARM_SCOPE", "https://management.azure.com"),
        ("ALPHASWARM_AZURE_POLL_INTERVAL", "soon"),
        ("ALPHASWARM_AZURE_MAX_PARALLEL", "0"),
    ],
)
async def test_bad_settings_are_named_before_any_request(
    arm: ArmEmulator, setting: str, value: str
) -> None:
    env = emulator_env(arm, **{setting: value})
    provider = make_provider(arm, AciProvider, env=env)
    with pytest.raises(SettingInvalid) as caught:
        await provider.health()
    assert caught.value.reason == "SETTING_INVALID"
    assert caught.value.code == "FAILED_PRECONDITION"
    assert setting in caught.value.message
    assert arm.requests == []


async def test_health_permission_denied(arm: ArmEmulator) -> None:
    arm.faults.inject("arm:ContainerGroups_ListByResourceGroup", Kind.DENIED)
    provider = make_provider(arm, AciProvider)
    with pytest.raises(BackendPermissionDenied) as caught:
        await provider.health()
    assert "Contributor" in caught.value.message
    await provider.close()


async def test_missing_resource_group_is_named(arm: ArmEmulator) -> None:
    provider = make_provider(arm, AciProvider, ALPHASWARM_AZURE_RESOURCE_GROUP="nope")
    with pytest.raises(Exception) as caught:
        await provider.health()
    assert "ALPHASWARM_AZURE_RESOURCE_GROUP" in str(caught.value)
    assert getattr(caught.value, "code", "") == "NOT_FOUND"
    await provider.close()


# -- one class per backend mode -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "cls"), [("", AciProvider), ("aci", AciProvider), (" AKS ", AksProvider)]
)
def test_the_mode_selects_the_class(mode: str, cls: type[object]) -> None:
    assert select_backend({"ALPHASWARM_AZURE_MODE": mode}) is cls


def test_an_unknown_mode_is_a_setting_error_naming_the_variable() -> None:
    with pytest.raises(SettingInvalid) as caught:
        select_backend({"ALPHASWARM_AZURE_MODE": "ecs"})
    assert caught.value.setting == "ALPHASWARM_AZURE_MODE"
    assert "aci, aks" in caught.value.message


def test_list_providers_shows_the_chosen_class() -> None:
    registry = Registry()
    assert registry.get("azure", {}) is AciProvider
    aci = registry.describe("azure", {})
    assert (aci.kind, aci.installed) == ("azure", True)
    assert set(aci.capabilities) == {
        "start", "stop", "scale", "status", "list", "config", "metrics", "logs", "delete",
    }  # fmt: skip
    aks = registry.describe("azure", {"ALPHASWARM_AZURE_MODE": "aks"})
    assert aks.kind == "azure"
    assert "native_watch" in aks.capabilities
    broken = registry.describe("azure", {"ALPHASWARM_AZURE_MODE": "nope"})
    assert broken.installed and "ALPHASWARM_AZURE_MODE" in broken.install_hint
