"""The backend selector of the ``azure`` alias: one provider class per mode.

The registry calls ``select_backend`` with the server's environment and serves
the alias with the class it returns, so ListProviders shows that class's kind
and capabilities (AKS adds ``native_watch``).
"""

from __future__ import annotations

from collections.abc import Mapping

from alphaswarm_core.providers.protocol import InfrastructureProvider

from .aci_provider import AciProvider
from .aci_revisions_provider import AciRevisionsProvider
from .aks_provider import AksProvider
from .revision_settings import revisions_configured
from .settings import MODES

BACKENDS: dict[str, type[InfrastructureProvider]] = {"aci": AciProvider, "aks": AksProvider}


def select_backend(env: Mapping[str, str]) -> type[InfrastructureProvider]:
    """``ALPHASWARM_AZURE_MODE``: ``aci`` (default) or ``aks``; anything else is
    ``SettingInvalid`` naming the variable. Builds no client and makes no call. In the
    aci mode, a revision store setting (``revision_settings``) selects
    ``AciRevisionsProvider``, which reports the ``revisions`` capability."""
    probe = AciProvider(env=env)
    mode = probe.setting_choice("MODE", MODES, "aci")
    if mode == "aci" and revisions_configured(probe):
        return AciRevisionsProvider
    return BACKENDS[mode]
