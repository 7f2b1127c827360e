"""Test-only glue between the ARM emulator and the real azure-mgmt clients.

The SDK refuses to send a bearer token over plain HTTP; ``AllowHttpForTests``
turns that check off per request (azure-core's ``enforce_https`` option), and
only the tests install it. ``FakeCredential`` is a TokenCredential that hands out
a token naming the audience it was asked for, as a real token's ``aud`` claim
would, so the emulator can refuse a token for the wrong cloud as ARM does.
``SendTo`` sends requests for a real ARM host (a sovereign cloud's) to the
emulator instead, so a provider can be configured exactly as in production.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from alphaswarm_controller.providers.azure import select_backend
from alphaswarm_core.providers.protocol import InfrastructureProvider

from .arm_emulator import TOKEN_AUDIENCE_PREFIX, TOKEN_SERIAL_SEPARATOR, ArmEmulator

P = TypeVar("P", bound=InfrastructureProvider)


class AllowHttpForTests(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False


class SendTo(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Rewrite requests for ``host`` to the emulator at ``base_url`` (scheme and netloc)."""

    def __init__(self, host: str, base_url: str) -> None:
        self._host = host
        self._target = urlsplit(base_url)

    def on_request(self, request: PipelineRequest[Any]) -> None:
        url = urlsplit(request.http_request.url)
        if url.hostname == self._host:
            request.http_request.url = urlunsplit(
                (self._target.scheme, self._target.netloc, url.path, url.query, url.fragment)
            )


class FakeCredential:
    """A TokenCredential; records the scopes asked for and the tokens issued.

    Each token is new (``aud=<audience>;n=<serial>``) and lives ``lifetime_seconds``:
    azure-core asks again for a token that expires within five minutes, so a short
    lifetime makes every request fetch a fresh one (a rotation on each call).
    """

    def __init__(self, *, fail: bool = False, lifetime_seconds: int = 3600) -> None:
        self.fail = fail
        self.lifetime = lifetime_seconds
        self.scopes: list[str] = []
        self.issued: list[str] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        if self.fail:
            raise ClientAuthenticationError("no credential (test)")
        audience = scopes[0].removesuffix("/.default") if scopes else ""
        token = f"{TOKEN_AUDIENCE_PREFIX}{audience}{TOKEN_SERIAL_SEPARATOR}{len(self.issued) + 1}"
        self.issued.append(token)
        return AccessToken(token, int(time.time()) + self.lifetime)


def emulator_env(emulator: ArmEmulator, **extra: str) -> dict[str, str]:
    store = emulator.store
    env = {
        "ALPHASWARM_AZURE_SUBSCRIPTION_ID": store.subscription_id,
        "ALPHASWARM_AZURE_RESOURCE_GROUP": next(iter(store.resource_groups)),
        "ALPHASWARM_AZURE_LOCATION": store.location,
        "ALPHASWARM_AZURE_ARM_ENDPOINT": emulator.base_url,
        "ALPHASWARM_AZURE_POLL_INTERVAL": "0.02",
        "ALPHASWARM_AZURE_LOG_POLL_INTERVAL": "0.25",
    }
    env.update(extra)
    return env


def client_options(*policies: SansIOHTTPPolicy, **extra: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    return {"per_call_policies": [AllowHttpForTests(), *policies], **extra}


def make_provider(
    emulator: ArmEmulator,
    kind: type[P],
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
    options: Mapping[str, Any] | None = None,
    **extra_env: str,
) -> P:
    """A ``kind`` provider as the registry builds it (its settings must select ``kind``),
    plus a test credential and the client options that reach the emulator."""
    settings = dict(env) if env is not None else emulator_env(emulator, **extra_env)
    chosen = select_backend(settings)
    assert chosen is kind, f"these settings select {chosen.__name__}, not {kind.__name__}"
    provider = cast(Any, kind)(
        env=settings,
        credential=credential or FakeCredential(),
        client_options=dict(options) if options is not None else client_options(),
    )
    return cast(P, provider)
