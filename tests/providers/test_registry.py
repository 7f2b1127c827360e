"""The registry: built-in aliases, lazy SDK imports, decorator rules and entry points."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alphaswarm_controller.providers import bootstrap
from alphaswarm_core.providers.errors import (
    InfrastructureProviderUnavailable,
    ProviderNotFoundError,
)
from alphaswarm_core.providers.registry import (
    BUILTIN_PROVIDERS,
    LazyProvider,
    Registry,
    register_provider_class,
)
from tests.fakes.memory_provider import MemoryProvider

SDK_MODULES = ("docker", "kubernetes", "boto3", "botocore", "azure", "google.cloud", "psutil")


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    return result.stdout.strip()


def test_bootstrap_registers_all() -> None:
    registry = bootstrap()
    for expected in ("local", "docker_compose", "kubernetes", "aws", "azure", "gcp"):
        assert expected in registry.aliases()


def test_starting_the_server_imports_no_provider_sdk() -> None:
    loaded = run_python(f"""
        import asyncio, json, sys
        from alphaswarm_controller.providers import bootstrap
        from alphaswarm_controller.server import start_server
        from alphaswarm_controller.settings import ServerSettings
        registry = bootstrap()
        registry.aliases()
        [registry.installed(alias) for alias in registry.aliases()]
        print(json.dumps([m for m in {SDK_MODULES!r} if m in sys.modules]))
    """)
    assert json.loads(loaded) == []


def test_unknown_alias_names_the_known_ones() -> None:
    with pytest.raises(ProviderNotFoundError) as caught:
        Registry().get("nomad")
    assert caught.value.known == tuple(sorted(p.alias for p in BUILTIN_PROVIDERS))


def test_missing_sdk_names_the_extra_to_install() -> None:
    registry = Registry(builtins=())
    registry.register_lazy(
        LazyProvider(
            "fly", "fly_provider:FlyProvider", "fly", extra="fly", sdk_modules=("no_such_fly_sdk",)
        )
    )
    assert not registry.installed("fly")
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        registry.get("fly")
    assert caught.value.reason == "SDK_MISSING"
    assert "pip install 'alphaswarm-controller[fly]'" in caught.value.message


def test_register_provider_class_refuses_silent_override() -> None:
    registry = Registry(builtins=())
    register_provider_class("memory", registry=registry)(MemoryProvider)
    assert registry.get("memory") is MemoryProvider
    with pytest.raises(ValueError, match="already registered"):
        register_provider_class("memory", registry=registry)(MemoryProvider)

    class Replacement(MemoryProvider):
        pass

    register_provider_class("memory", replace=True, registry=registry)(Replacement)
    assert registry.get("memory") is Replacement
    with pytest.raises(ValueError, match="provider_alias"):
        register_provider_class("other", registry=registry)(MemoryProvider)


def test_third_party_provider_via_entry_point(tmp_path: Path) -> None:
    """A package that only declares the entry point is usable without editing the project."""
    (tmp_path / "nomad_provider.py").write_text(
        textwrap.dedent("""
        from tests.fakes.memory_provider import MemoryProvider

        class NomadProvider(MemoryProvider):
            provider_kind = "nomad"
            provider_alias = "nomad"
    """)
    )
    dist = tmp_path / "nomad_provider-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nomad-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[alphaswarm.providers]\nnomad = nomad_provider:NomadProvider\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = run_python(
        """
        import json
        from alphaswarm_controller.providers import bootstrap
        registry = bootstrap()
        entry = registry.lazy_entry("nomad")
        cls = registry.get("nomad")
        print(json.dumps([cls.__name__, entry.origin, "nomad" in registry.aliases()]))
        """,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])},
    )
    assert json.loads(out) == ["NomadProvider", "nomad-provider", True]


def test_entry_point_with_an_invalid_alias_is_skipped(tmp_path: Path) -> None:
    """Aliases name settings (ALPHASWARM_<ALIAS>_*) and appear in logs: no '-', no newline."""
    dist = tmp_path / "fly_provider-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fly-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[alphaswarm.providers]\nfly-io = fly_provider:FlyProvider\nFly = fly_provider:Fly\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = run_python(
        """
        import json, logging, sys
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
        from alphaswarm_controller.providers import bootstrap
        print(json.dumps(bootstrap().aliases()))
        """,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])},
    )
    *warnings, aliases = out.splitlines()
    assert json.loads(aliases) == sorted(p.alias for p in BUILTIN_PROVIDERS)
    assert len(warnings) == 2 and all("a provider alias is" in w for w in warnings), warnings


def _distribution(root: Path, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path."""
    dist = root / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[alphaswarm.providers]\n{entry_points}")


def test_entry_points_register_lazily_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same as the two tests above, in process: what is registered, from which
    distribution, and what is skipped with a warning (the child Python of those tests
    runs the original code, so only these can notice a changed registry)."""
    _distribution(
        tmp_path,
        "nomad-provider",
        "nomad = nomad_provider:NomadProvider\nfly-io = fly:Fly\nlocal = other:Local\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(builtins=[e for e in BUILTIN_PROVIDERS if e.alias == "local"])
    with caplog.at_level(logging.WARNING, logger="alphaswarm_core.providers.registry"):
        added = registry.load_entry_points()
    assert added == ["nomad"]
    entry = registry.lazy_entry("nomad")
    assert entry == LazyProvider(
        "nomad", "nomad_provider:NomadProvider", kind="nomad", origin="nomad-provider"
    )
    assert registry.origin("nomad") == "nomad-provider"
    assert registry.aliases() == ["local", "nomad"]
    assert registry.lazy_entry("local") == BUILTIN_PROVIDERS[0]
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("ignoring entry point 'fly-io' = 'fly:Fly': a provider alias")
    assert warnings[1] == "ignoring entry point local = other:Local: alias already registered"
