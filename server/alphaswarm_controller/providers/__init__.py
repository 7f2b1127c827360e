"""Built-in providers, one module (or package) each, imported lazily by the registry."""

from __future__ import annotations

from alphaswarm_core.providers.registry import REGISTRY, Registry

_entry_points_loaded = False


def bootstrap(registry: Registry | None = None) -> Registry:
    """The registry with every built-in alias plus third-party entry points.

    Built-ins are registered lazily (alias -> module path) when the registry is
    created, so this imports no provider SDK; entry points are read once.
    """
    global _entry_points_loaded
    target = registry or REGISTRY
    if registry is not None or not _entry_points_loaded:
        target.load_entry_points()
        _entry_points_loaded = _entry_points_loaded or registry is None
    return target
