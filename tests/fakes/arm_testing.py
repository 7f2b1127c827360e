"""Test-only glue between the ARM emulator and the real azure-mgmt clients.

The SDK refuses to send a bearer token over plain HTTP; ``AllowHttpForTests``
turns that check off per request (azure-core's ``enforce_https`` option), and
only the tests install it. ``FakeCredential`` is a TokenCredential that hands out
a fixed token, as azure-identity's credentials would hand out a real one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from alphaswarm_controller.providers.azure import AzureProvider

from .arm_emulator import ArmEmulator


class AllowHttpForTests(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False


class FakeCredential:
    """A TokenCredential; records the scopes asked for."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        if self.fail:
            raise ClientAuthenticationError("no credential (test)")
        return AccessToken("fake-token", int(time.time()) + 3600)


def emulator_env(emulator: ArmEmulator, **extra: str) -> dict[str, str]:
    store = emulator.store
    env = {
        "ALPHASWARM_AZURE_SUBSCRIPTION_ID": store.subscription_id,
        "ALPHASWARM_AZURE_RESOURCE_GROUP": next(iter(store.resource_groups)),
        "ALPHASWARM_AZURE_LOCATION": store.location,
        "ALPHASWARM_AZURE_ARM_ENDPOINT": emulator.base_url,
        "ALPHASWARM_AZURE_POLL_INTERVAL": "0.02",
    }
    env.update(extra)
    return env


def client_options(**extra: Any) -> dict[str, Any]:
    return {"per_call_policies": [AllowHttpForTests()], "retry_total": 0, **extra}


def make_provider(
    emulator: ArmEmulator,
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
    **extra_env: str,
) -> AzureProvider:
    return AzureProvider(
        env=dict(env) if env is not None else emulator_env(emulator, **extra_env),
        credential=credential or FakeCredential(),
        client_options=client_options(),
    )
