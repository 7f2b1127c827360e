"""Provider registry: aliases to provider classes, resolved lazily.

Built-in providers are known by alias and module path only (``BUILTIN_PROVIDERS``,
the one place a built-in is registered), so importing this module (or starting the
server) imports no cloud SDK: a provider's module, and with it its SDK, is imported
the first time that alias is used. Third-party packages register through the
``alphaswarm.providers`` entry-point group (``alias = "package.module:ProviderClass"``)
or, for code the server imports anyway, with the ``register_provider_class`` decorator.

A target is a provider class, or a *backend selector*: a function that takes the
server's environment and returns the class serving the alias under those settings
(one class per backend mode: the ``aws`` alias is ECS or EKS). ``describe`` says what
ListProviders shows about an alias; it imports, so the server calls it off its loop.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from alphaswarm_core.providers.reasons import ErrorReason

from .errors import InfrastructureProviderUnavailable, ProviderNotFoundError
from .models import ALIAS_RULE, ProviderKind, is_alias
from .protocol import InfrastructureProvider

ENTRY_POINT_GROUP = "alphaswarm.providers"
DISTRIBUTION = "alphaswarm-controller"

log = logging.getLogger(__name__)

ProviderClass = type[InfrastructureProvider]
BackendSelector = Callable[[Mapping[str, str]], ProviderClass]
"""Picks the class that serves an alias from the server's settings (its backend mode)."""
ProviderTarget = ProviderClass | BackendSelector


@dataclass(frozen=True, slots=True)
class ProviderDescription:
    """What ListProviders says about one alias."""

    alias: str
    kind: str
    installed: bool
    origin: str
    capabilities: tuple[str, ...] = ()
    install_hint: str = ""
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class LazyProvider:
    """Where to find a provider class without importing it yet."""

    alias: str
    target: str
    """``module:ClassName``."""
    kind: ProviderKind | str
    extra: str | None = None
    """The pip extra that installs its SDK (built-ins only)."""
    sdk_modules: tuple[str, ...] = ()
    """Top-level modules whose absence means the extra is not installed."""
    origin: str = "builtin"


BUILTIN_PROVIDERS: tuple[LazyProvider, ...] = (
    LazyProvider(
        "local", "alphaswarm_controller.providers.local:LocalProvider", ProviderKind.LOCAL
    ),
    LazyProvider(
        "docker_compose",
        "alphaswarm_controller.providers.docker_compose:DockerComposeProvider",
        ProviderKind.DOCKER_COMPOSE,
        extra="docker_compose",
        sdk_modules=("docker", "cryptography"),
    ),
    LazyProvider(
        "kubernetes",
        "alphaswarm_controller.providers.kubernetes:KubernetesProvider",
        ProviderKind.KUBERNETES,
        extra="kubernetes",
        sdk_modules=("kubernetes",),
    ),
    LazyProvider(
        "aws",
        "alphaswarm_controller.providers.aws:select_backend",
        ProviderKind.AWS,
        extra="aws",
        sdk_modules=("boto3",),
    ),
    LazyProvider(
        "azure",
        "alphaswarm_controller.providers.azure:select_backend",
        ProviderKind.AZURE,
        extra="azure",
        sdk_modules=("azure.identity", "azure.mgmt.containerinstance"),
    ),
    LazyProvider(
        "gcp",
        "alphaswarm_controller.providers.gcp:select_backend",
        ProviderKind.GCP,
        extra="gcp",
        sdk_modules=("google.cloud.run_v2", "google.cloud.secretmanager"),
    ),
)


def _module_present(name: str) -> bool:
    """Whether ``name`` is importable, without importing it or its parent packages.

    ``importlib.util.find_spec("azure.identity")`` would import ``azure``, so the
    path entries are searched directly; start-up stays free of SDK imports.
    """
    if name in sys.modules:
        return True
    locations = [entry or "." for entry in sys.path]
    *packages, leaf = name.split(".")
    for part in packages:
        locations = [str(path) for base in locations if (path := Path(base, part)).is_dir()]
        if not locations:
            return False
    suffixes = importlib.machinery.all_suffixes()
    return any(
        Path(base, leaf).is_dir() or any(Path(base, leaf + suffix).exists() for suffix in suffixes)
        for base in locations
    )


def _check_alias(alias: str) -> None:
    if not is_alias(alias):
        raise ValueError(f"provider alias {alias[:64]!r} is not valid: an alias is {ALIAS_RULE}")


class Registry:
    """Aliases to provider classes (loaded) or to where to load them from (lazy)."""

    def __init__(self, builtins: Iterable[LazyProvider] = BUILTIN_PROVIDERS) -> None:
        self._lock = threading.Lock()
        self._classes: dict[str, ProviderTarget] = {}
        self._lazy: dict[str, LazyProvider] = {entry.alias: entry for entry in builtins}
        self._origins: dict[str, str] = {entry.alias: entry.origin for entry in builtins}

    def register(self, alias: str, cls: ProviderTarget, *, replace: bool = False) -> None:
        _check_alias(alias)
        with self._lock:
            if not replace and (alias in self._classes or alias in self._lazy):
                raise ValueError(
                    f"provider alias {alias!r} is already registered; "
                    "pass replace=True to override it"
                )
            lazy = self._lazy.pop(alias, None)
            self._classes[alias] = cls
            self._origins[alias] = lazy.origin if lazy else self._origins.get(alias, "registered")

    def register_lazy(self, entry: LazyProvider, *, replace: bool = False) -> None:
        _check_alias(entry.alias)
        with self._lock:
            if not replace and (entry.alias in self._classes or entry.alias in self._lazy):
                raise ValueError(f"provider alias {entry.alias!r} is already registered")
            self._classes.pop(entry.alias, None)
            self._lazy[entry.alias] = entry
            self._origins[entry.alias] = entry.origin

    def load_entry_points(self) -> list[str]:
        """Register third-party providers from installed distributions; return their aliases."""
        import importlib.metadata  # here: it costs a server's start-up ~30 ms

        added = []
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not is_alias(point.name):
                log.warning(
                    "ignoring entry point %r = %r: a provider alias is %s",
                    point.name[:64],
                    point.value[:200],
                    ALIAS_RULE,
                )
                continue
            if point.name in self:
                log.warning(
                    "ignoring entry point %s = %s: alias already registered",
                    point.name,
                    point.value,
                )
                continue
            dist = point.dist.name if point.dist else "unknown distribution"
            self.register_lazy(LazyProvider(point.name, point.value, kind=point.name, origin=dist))
            added.append(point.name)
        return added

    def __contains__(self, alias: object) -> bool:
        return alias in self._classes or alias in self._lazy

    def aliases(self) -> list[str]:
        return sorted({*self._classes, *self._lazy})

    def is_loaded(self, alias: str) -> bool:
        return alias in self._classes

    def origin(self, alias: str) -> str:
        """ "builtin", the distribution of an entry point, or "registered" (from code)."""
        try:
            return self._origins[alias]
        except KeyError:
            raise ProviderNotFoundError(alias, self.aliases()) from None

    def lazy_entry(self, alias: str) -> LazyProvider | None:
        return self._lazy.get(alias)

    def installed(self, alias: str) -> bool:
        """Whether the alias's SDK is importable, without importing it."""
        if alias in self._classes:
            return True
        entry = self._lazy.get(alias)
        if entry is None:
            return False
        return all(_module_present(name) for name in entry.sdk_modules)

    def get(self, alias: str, env: Mapping[str, str] | None = None) -> ProviderClass:
        """The provider class serving ``alias`` under ``env`` (default: os.environ),
        importing its module on first use."""
        target = self._target(alias)
        if isinstance(target, type):
            return target
        chosen = target(os.environ if env is None else env)
        if not (isinstance(chosen, type) and issubclass(chosen, InfrastructureProvider)):
            raise InfrastructureProviderUnavailable(
                f"the backend selector of {alias!r} returned {chosen!r}, not a provider class",
                reason=ErrorReason.PROVIDER_INVALID,
            )
        return chosen

    def describe(
        self, alias: str, env: Mapping[str, str] | None = None, *, default: str = ""
    ) -> ProviderDescription:
        """What ListProviders shows: kind, capabilities of the class serving ``alias`` under
        ``env``, or why it cannot be loaded. Imports the provider's module."""
        entry = self._lazy.get(alias)
        origin, is_default = self.origin(alias), alias == default
        try:
            cls = self.get(alias, env)
        except InfrastructureProviderUnavailable as exc:
            # Not installed (SDK_MISSING), or installed but unusable as set up: either way
            # the hint says what to do, and ListProviders itself does not fail.
            kind = str(entry.kind) if entry else alias  # a StrEnum's str() is its value
            return ProviderDescription(
                alias,
                kind,
                installed=exc.reason is not ErrorReason.SDK_MISSING,
                origin=origin,
                install_hint=exc.metadata.get("install") or exc.message,
                is_default=is_default,
            )
        kind = str(cls.provider_kind)
        return ProviderDescription(
            alias, kind, True, origin, cls.capabilities(), is_default=is_default
        )

    def _target(self, alias: str) -> ProviderTarget:
        target = self._classes.get(alias)
        if target is not None:
            return target
        entry = self._lazy.get(alias)
        if entry is None:
            raise ProviderNotFoundError(alias, self.aliases())
        target = self._load(entry)
        with self._lock:
            if self._lazy.get(alias) is entry:
                del self._lazy[alias]
                self._classes[alias] = target
        return self._classes[alias]

    def _load(self, entry: LazyProvider) -> ProviderTarget:
        module_name, _, class_name = entry.target.partition(":")
        missing = [name for name in entry.sdk_modules if not _module_present(name)]
        try:
            if missing:
                raise ModuleNotFoundError(name=missing[0])
            cls = getattr(importlib.import_module(module_name), class_name)
        except ModuleNotFoundError as exc:
            if entry.extra is not None:
                install = f"pip install '{DISTRIBUTION}[{entry.extra}]'"
                message = f"provider {entry.alias!r} needs the {exc.name!r} package: {install}"
            else:
                install = f"install the package that provides {entry.target}"
                message = f"provider {entry.alias!r} cannot be loaded ({exc.name!r} missing)"
            raise InfrastructureProviderUnavailable(
                message,
                reason=ErrorReason.SDK_MISSING,
                metadata={"install": install, "missing_module": str(exc.name)},
            ) from exc
        except AttributeError:
            cls = None
        is_class = isinstance(cls, type) and issubclass(cls, InfrastructureProvider)
        if not is_class and not (callable(cls) and not isinstance(cls, type)):
            raise InfrastructureProviderUnavailable(
                f"{entry.target} is neither an InfrastructureProvider subclass "
                "nor a backend selector",
                reason=ErrorReason.PROVIDER_INVALID,
            )
        target: ProviderTarget = cls
        return target


#: The process-wide registry that ``register_provider_class`` writes to.
REGISTRY = Registry()


def register_provider_class(
    alias: str, *, replace: bool = False, registry: Registry | None = None
) -> Callable[[ProviderClass], ProviderClass]:
    """Class decorator registering a provider under ``alias`` in the process-wide registry.

    For code the server imports anyway; a distribution of its own registers through the
    ``alphaswarm.providers`` entry point instead (one or the other, not both). An alias
    that is already taken is refused: ``replace=True`` takes it over deliberately.
    """

    def decorate(cls: ProviderClass) -> ProviderClass:
        if getattr(cls, "provider_alias", alias) != alias:
            raise ValueError(
                f"{cls.__name__}.provider_alias is {cls.provider_alias!r}, registered as {alias!r}"
            )
        (registry or REGISTRY).register(alias, cls, replace=replace)
        return cls

    return decorate
