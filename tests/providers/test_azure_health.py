"""Health, settings and credentials of the azure provider; the emulator's ARM semantics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from alphaswarm_controller.providers.azure import AzureProvider
from alphaswarm_controller.providers.azure.clients import MANAGEMENT_SCOPE
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.providers.registry import Registry
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import FakeCredential, client_options, emulator_env, make_provider


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    emulator = ArmEmulator().start()
    yield emulator
    emulator.close()


async def test_health_gets_a_management_token_and_lists(arm: ArmEmulator) -> None:
    credential = FakeCredential()
    provider = make_provider(arm, credential=credential)
    health = await provider.health()
    assert health.healthy
    assert (health.alias, health.kind) == ("azure", "azure")
    assert health.details["resource_group"] == "alphaswarm-rg"
    assert MANAGEMENT_SCOPE in credential.scopes
    assert arm.count("GET", r"/containerGroups$") == 1
    await provider.close()


async def test_missing_credentials_name_every_source(arm: ArmEmulator) -> None:
    provider = make_provider(arm, credential=FakeCredential(fail=True))
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
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    # IMDS is unreachable on this machine; point the probe at a closed local port.
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")
    provider = AzureProvider(env=emulator_env(arm), client_options=client_options())
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CREDENTIALS_MISSING"
    await provider.close()


async def test_missing_settings_are_named(arm: ArmEmulator) -> None:
    env = emulator_env(arm)
    del env["ALPHASWARM_AZURE_RESOURCE_GROUP"]
    provider = make_provider(arm, env=env)
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "SETTING_INVALID"
    assert "ALPHASWARM_AZURE_RESOURCE_GROUP" in caught.value.message


async def test_health_permission_denied(arm: ArmEmulator) -> None:
    arm.inject("GET", r"/containerGroups$", 403, "AuthorizationFailed", "no read access")
    provider = make_provider(arm)
    with pytest.raises(BackendPermissionDenied) as caught:
        await provider.health()
    assert "Contributor" in caught.value.message
    await provider.close()


async def test_missing_resource_group_is_named(arm: ArmEmulator) -> None:
    provider = make_provider(arm, ALPHASWARM_AZURE_RESOURCE_GROUP="nope")
    with pytest.raises(Exception) as caught:
        await provider.health()
    assert "ALPHASWARM_AZURE_RESOURCE_GROUP" in str(caught.value)
    assert getattr(caught.value, "code", "") == "NOT_FOUND"
    await provider.close()


def test_registry_loads_the_azure_alias() -> None:
    registry = Registry()
    assert registry.get("azure") is AzureProvider


def test_emulator_requires_api_version_and_token(arm: ArmEmulator) -> None:
    url = (
        f"{arm.base_url}/subscriptions/{arm.store.subscription_id}/resourceGroups/alphaswarm-rg"
        "/providers/Microsoft.ContainerInstance/containerGroups"
    )
    no_version = requests.get(url, headers={"Authorization": "Bearer x"}, timeout=5)
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    no_token = requests.get(url, params={"api-version": "2023-05-01"}, timeout=5)
    assert no_token.status_code == 401
    missing = requests.get(
        url + "/absent",
        params={"api-version": "2023-05-01"},
        headers={"Authorization": "Bearer x"},
        timeout=5,
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ResourceNotFound"
