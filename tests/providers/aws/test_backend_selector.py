"""``select_backend``: one class per mode, chosen from ALPHASWARM_AWS_MODE, as ListProviders
reports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from alphaswarm_controller.providers.aws import EcsProvider, EksProvider, select_backend
from alphaswarm_core.providers.protocol import SettingInvalid
from alphaswarm_core.providers.registry import Registry


def test_mode_picks_the_class() -> None:
    assert select_backend({}) is EcsProvider
    assert select_backend({"ALPHASWARM_AWS_MODE": "ecs"}) is EcsProvider
    assert select_backend({"ALPHASWARM_AWS_MODE": " EKS "}) is EksProvider


def test_a_bad_mode_is_a_setting_error() -> None:
    with pytest.raises(SettingInvalid) as caught:
        select_backend({"ALPHASWARM_AWS_MODE": "lambda"})
    assert caught.value.code == "FAILED_PRECONDITION"
    assert caught.value.setting == "ALPHASWARM_AWS_MODE"
    assert "ecs, eks" in caught.value.message


def test_list_providers_reports_the_chosen_class() -> None:
    registry = Registry()
    ecs = registry.describe("aws", {"ALPHASWARM_AWS_MODE": "ecs"})
    assert (ecs.kind, ecs.installed) == ("aws", True)
    assert set(ecs.capabilities) == set(EcsProvider.capabilities())
    assert "native_watch" not in ecs.capabilities
    eks = registry.describe("aws", {"ALPHASWARM_AWS_MODE": "eks"})
    assert eks.kind == "aws"
    assert "native_watch" in eks.capabilities
    bad = registry.describe("aws", {"ALPHASWARM_AWS_MODE": "nope"})
    assert bad.installed and not bad.capabilities
    assert "ALPHASWARM_AWS_MODE" in bad.install_hint


def test_both_classes_are_the_aws_alias() -> None:
    for cls in (EcsProvider, EksProvider):
        assert cls.provider_alias == "aws"
        assert str(cls.provider_kind) == "aws"


def test_ecs_mode_imports_no_kubernetes_sdk() -> None:
    code = textwrap.dedent("""
        import json, sys
        from alphaswarm_core.providers.registry import Registry
        cls = Registry().get("aws", {"ALPHASWARM_AWS_MODE": "ecs"})
        print(json.dumps([cls.__name__, "kubernetes" in sys.modules]))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
        timeout=60,
    ).stdout
    assert json.loads(out) == ["EcsProvider", False]
