"""The ``local`` provider: replicas as supervised OS processes, desired state in SQLite."""

from __future__ import annotations

from .provider import LocalProvider

__all__ = ["LocalProvider"]
