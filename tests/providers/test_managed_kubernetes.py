"""EKS, AKS and GKE modes are the kubernetes provider with one hook of their own.

Outside tests/providers/kubernetes/: that package runs in a venv with the kubernetes
extra alone (scripts/ci/provider_matrix.py), where the cloud SDKs are absent.
"""

from __future__ import annotations

import pytest

from alphaswarm_controller.providers.aws import EksProvider
from alphaswarm_controller.providers.azure import AksProvider
from alphaswarm_controller.providers.gcp import GkeProvider
from alphaswarm_controller.providers.kubernetes import KubernetesProvider


@pytest.mark.parametrize("cloud", [EksProvider, AksProvider, GkeProvider])
def test_the_cloud_providers_use_the_hook_and_nothing_else(cloud: type[KubernetesProvider]) -> None:
    assert "_discover_connection" in vars(cloud)
    for internal in ("_resolved", "_build_cluster", "_call"):
        assert internal not in vars(cloud), f"{cloud.__name__} overrides {internal}"
