"""The ``gcp`` alias's backend selector: ALPHASWARM_GCP_MODE picks the provider class.

``cloudrun`` (default) is ``CloudRunProvider``; ``gke`` is ``GkeProvider``, a
``KubernetesProvider``. Each class is the whole of its mode (no method branches on the
mode), and ListProviders reports the chosen class's kind and capabilities (GKE mode has
Kubernetes' ``native_watch``, Cloud Run's does not). The chosen module is imported only
here, so Cloud Run mode never imports the kubernetes client.
"""

from __future__ import annotations

from collections.abc import Mapping

from alphaswarm_core.providers.protocol import (
    InfrastructureProvider,
    InfrastructureProviderUnavailable,
    SettingInvalid,
)
from alphaswarm_core.providers.reasons import ErrorReason

MODE_SETTING = "ALPHASWARM_GCP_MODE"
MODES = ("cloudrun", "gke")
DEFAULT_MODE = "cloudrun"


def mode(env: Mapping[str, str]) -> str:
    """The configured mode; ``SettingInvalid`` (FAILED_PRECONDITION) naming the variable."""
    raw = env.get(MODE_SETTING, "").strip().lower() or DEFAULT_MODE
    if raw not in MODES:
        raise SettingInvalid(MODE_SETTING, f"must be one of {', '.join(MODES)}, not {raw[:32]!r}")
    return raw


def select_backend(env: Mapping[str, str]) -> type[InfrastructureProvider]:
    if mode(env) == "gke":
        try:
            from .gke import GkeProvider
        except ModuleNotFoundError as exc:  # the kubernetes client, part of the gcp extra
            install = "pip install 'alphaswarm-controller[gcp]'"
            raise InfrastructureProviderUnavailable(
                f"GKE mode needs the {exc.name!r} package: {install}",
                reason=ErrorReason.SDK_MISSING,
                metadata={"install": install, "missing_module": str(exc.name)},
            ) from exc
        return GkeProvider
    from .cloudrun_provider import CloudRunProvider

    return CloudRunProvider
