"""The ``gcp`` provider (Cloud Run, Secret Manager, Cloud Monitoring; GKE sub-path)."""

from __future__ import annotations

from .provider import GcpProvider

__all__ = ["GcpProvider"]
