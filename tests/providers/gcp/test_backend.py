"""The ``gcp`` alias's backend selector: one class per mode, reported as such by ListProviders."""

from __future__ import annotations

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider, GkeProvider, select_backend
from alphaswarm_core.providers.protocol import SettingInvalid
from alphaswarm_core.providers.registry import BUILTIN_PROVIDERS, Registry


@pytest.mark.parametrize(
    ("mode", "cls"),
    [("", CloudRunProvider), ("cloudrun", CloudRunProvider), ("GKE", GkeProvider)],
)
def test_the_mode_picks_the_class(mode: str, cls: type) -> None:
    assert select_backend({"ALPHASWARM_GCP_MODE": mode}) is cls


def test_an_unknown_mode_is_a_bad_setting() -> None:
    with pytest.raises(SettingInvalid) as caught:
        select_backend({"ALPHASWARM_GCP_MODE": "appengine"})
    assert caught.value.code == "FAILED_PRECONDITION"
    assert caught.value.metadata == {"setting": "ALPHASWARM_GCP_MODE"}


def test_the_registry_entry_is_the_selector() -> None:
    (entry,) = [e for e in BUILTIN_PROVIDERS if e.alias == "gcp"]
    assert entry.target == "alphaswarm_controller.providers.gcp:select_backend"


def test_list_providers_reports_the_chosen_class() -> None:
    registry = Registry()
    cloud_run = registry.describe("gcp", {})
    gke = registry.describe("gcp", {"ALPHASWARM_GCP_MODE": "gke"})
    assert (cloud_run.kind, gke.kind) == ("gcp", "gcp")
    assert set(cloud_run.capabilities) == {
        "start",
        "stop",
        "scale",
        "status",
        "list",
        "config",
        "metrics",
        "logs",
        "delete",
        "revisions",
    }
    # GKE mode is the kubernetes provider: its native watch; both keep revisions (Cloud
    # Run's revisions, the Deployment's ReplicaSets).
    assert set(gke.capabilities) == set(cloud_run.capabilities) | {"native_watch"}
    bad = registry.describe("gcp", {"ALPHASWARM_GCP_MODE": "nope"})
    assert bad.installed and "ALPHASWARM_GCP_MODE" in bad.install_hint
