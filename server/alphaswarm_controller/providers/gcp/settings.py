"""``ALPHASWARM_GCP_*`` settings, shared by both backend classes (docs/providers.md, gcp).

Read once, when a provider is constructed, through the base class's typed helpers (a
malformed number is ``SettingInvalid`` at once); ``validate`` checks the rest (region,
project, service account, the GKE cluster) before the first API call, so a bad
setting is FAILED_PRECONDITION naming the variable, never the caller's INVALID_ARGUMENT.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from alphaswarm_core.providers.protocol import SettingInvalid

PREFIX = "ALPHASWARM_GCP_"
DEFAULT_HISTORY, MIN_HISTORY, MAX_HISTORY = 10, 2, 100
APIS = ("run", "secretmanager", "monitoring", "logging", "container")
#: Every setting the gcp provider reads under ALPHASWARM_GCP_ (GKE mode routes the rest of
#: its settings to the Kubernetes machinery's ALPHASWARM_KUBERNETES_*).
NAMES = frozenset(
    {
        "PROJECT",
        "REGION",
        "MODE",
        "SERVICE_ACCOUNT",
        "POLL_INTERVAL",
        "OPERATION_TIMEOUT",
        "METRICS_WINDOW",
        "REVISION_HISTORY",
        "GKE_CLUSTER",
        "GKE_LOCATION",
        "API_ENDPOINT",
        *(f"{api.upper()}_ENDPOINT" for api in APIS),
    }
)
# Regions are <area>-<direction><digit(s)>: us-central1, europe-west4,
# northamerica-northeast2, me-central1, africa-south1.
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}")
# Project ids: 6-30 lowercase letters, digits, hyphens, starting with a letter, not ending
# with a hyphen (https://cloud.google.com/resource-manager/docs/creating-managing-projects),
# optionally behind a legacy domain prefix ("example.com:my-project").
_PROJECT = re.compile(r"([a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
# Service account e-mails: user-managed (name@project.iam.gserviceaccount.com, name 6-30
# chars) and Google's defaults (N-compute@developer..., project@appspot...).
_SERVICE_ACCOUNT = re.compile(
    r"[a-z0-9][-a-z0-9]{4,62}@[a-z][-a-z0-9.:]{0,98}\.gserviceaccount\.com"
)
_LOCATION = re.compile(r"[a-z]+-[a-z]+[0-9]{1,2}(-[a-z])?")  # a region or a zone
_CLUSTER_PATH = re.compile(r"projects/[^/\s]+/locations/[^/\s]+/clusters/[^/\s]+")
_CLUSTER_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")


class SettingReader(Protocol):
    """The typed setting helpers of ``InfrastructureProvider``."""

    def setting(self, name: str, default: str = "") -> str: ...

    def setting_seconds(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float = 86400.0
    ) -> float: ...

    def setting_int(
        self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31
    ) -> int: ...


def is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else endpoint
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GcpSettings:
    project: str = ""
    region: str = "us-central1"
    service_account: str = ""
    """The runtime identity of the Cloud Run revisions (empty: the project's default)."""
    endpoints: Mapping[str, str] = field(default_factory=dict)
    poll_interval: float = 1.0
    operation_timeout: float = 300.0
    metrics_window: float = 300.0
    revision_history: int = DEFAULT_HISTORY
    """Cloud Run mode: how many revisions ListRevisions shows and rollback reaches."""
    gke_cluster: str = ""
    gke_location: str = ""

    @classmethod
    def load(cls, reader: SettingReader) -> GcpSettings:
        common = reader.setting("API_ENDPOINT").strip()
        endpoints = {
            api: value
            for api in APIS
            if (value := reader.setting(f"{api.upper()}_ENDPOINT").strip() or common)
        }
        return cls(
            project=reader.setting("PROJECT").strip(),
            region=reader.setting("REGION").strip() or "us-central1",
            service_account=reader.setting("SERVICE_ACCOUNT").strip(),
            endpoints=endpoints,
            poll_interval=reader.setting_seconds("POLL_INTERVAL", 1.0, minimum=0.001, maximum=60),
            operation_timeout=reader.setting_seconds("OPERATION_TIMEOUT", 300.0, minimum=1),
            metrics_window=reader.setting_seconds("METRICS_WINDOW", 300.0, minimum=1),
            revision_history=reader.setting_int(
                "REVISION_HISTORY", DEFAULT_HISTORY, minimum=MIN_HISTORY, maximum=MAX_HISTORY
            ),
            gke_cluster=reader.setting("GKE_CLUSTER").strip(),
            gke_location=reader.setting("GKE_LOCATION").strip(),
        )

    def validate(self) -> None:
        """Raise ``SettingInvalid`` naming the first bad setting; no API call is made."""
        if not _REGION.fullmatch(self.region):
            raise SettingInvalid(
                f"{PREFIX}REGION", "is not a Google Cloud region (e.g. us-central1)"
            )
        if self.project and not _PROJECT.fullmatch(self.project):
            raise SettingInvalid(f"{PREFIX}PROJECT", "is not a project id")
        if self.service_account and not _SERVICE_ACCOUNT.fullmatch(self.service_account):
            raise SettingInvalid(
                f"{PREFIX}SERVICE_ACCOUNT",
                "is not a service account e-mail (name@project.iam.gserviceaccount.com)",
            )

    def validate_gke(self) -> None:
        self.validate()
        if not self.gke_cluster:
            raise SettingInvalid(f"{PREFIX}GKE_CLUSTER", "is required when the mode is gke")
        if not (
            _CLUSTER_PATH.fullmatch(self.gke_cluster) or _CLUSTER_NAME.fullmatch(self.gke_cluster)
        ):
            raise SettingInvalid(
                f"{PREFIX}GKE_CLUSTER",
                "is neither a cluster name nor projects/P/locations/L/clusters/NAME",
            )
        if self.gke_location and not _LOCATION.fullmatch(self.gke_location):
            raise SettingInvalid(f"{PREFIX}GKE_LOCATION", "is not a region or zone")

    def cluster_path(self, project: str) -> str:
        if self.gke_cluster.startswith("projects/"):
            return self.gke_cluster
        location = self.gke_location or self.region
        return f"projects/{project}/locations/{location}/clusters/{self.gke_cluster}"

    @property
    def emulated(self) -> bool:
        return bool(self.endpoints) and all(is_loopback(e) for e in self.endpoints.values())
