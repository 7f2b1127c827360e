"""The ``gcp`` provider: one class per backend mode, picked by ``select_backend``.

* ``CloudRunProvider`` (ALPHASWARM_GCP_MODE=cloudrun, the default): Cloud Run v2
  services, config in Secret Manager, metrics from Cloud Monitoring.
* ``GkeProvider`` (ALPHASWARM_GCP_MODE=gke): a ``KubernetesProvider`` bound to a GKE
  cluster found through the container API.

Settings and behaviour: the gcp section of docs/providers.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend import select_backend

if TYPE_CHECKING:
    from .cloudrun_provider import CloudRunProvider
    from .gke import GkeProvider

__all__ = ["CloudRunProvider", "GkeProvider", "select_backend"]


def __getattr__(name: str) -> Any:
    # The classes load on first use, so naming the package imports no kubernetes client.
    if name == "CloudRunProvider":
        from .cloudrun_provider import CloudRunProvider

        return CloudRunProvider
    if name == "GkeProvider":
        from .gke import GkeProvider

        return GkeProvider
    raise AttributeError(name)
