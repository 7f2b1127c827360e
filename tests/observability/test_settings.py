"""The observability settings as read from the environment."""

from __future__ import annotations

import pytest

from alphaswarm_controller.settings import ServerSettings


def test_defaults_are_off() -> None:
    settings = ServerSettings.from_env({})
    assert (settings.metrics_listen, settings.tracing, settings.log_format) == (None, "off", "text")


def test_values() -> None:
    settings = ServerSettings.from_env(
        {
            "ALPHASWARM_CP_METRICS_LISTEN": "0.0.0.0:9464",
            "ALPHASWARM_CP_TRACING": "OTEL",
            "ALPHASWARM_CP_LOG_FORMAT": "json",
        }
    )
    assert (settings.metrics_listen, settings.tracing, settings.log_format) == (
        "0.0.0.0:9464",
        "otel",
        "json",
    )
    assert ServerSettings.from_env({"ALPHASWARM_CP_METRICS_LISTEN": "off"}).metrics_listen is None
    assert ServerSettings.from_env({"ALPHASWARM_CP_METRICS_LISTEN": "[::]:0"}).metrics_listen


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ALPHASWARM_CP_METRICS_LISTEN", "9464"),
        ("ALPHASWARM_CP_METRICS_LISTEN", "localhost:http"),
        ("ALPHASWARM_CP_TRACING", "jaeger"),
        ("ALPHASWARM_CP_LOG_FORMAT", "xml"),
        ("ALPHASWARM_CP_PROVIDER", "local\nforged log line"),
        ("ALPHASWARM_CP_PROVIDER", "Local"),
        ("ALPHASWARM_CP_PROVIDERS", "local,docker compose"),
    ],
)
def test_bad_values_stop_the_start(name: str, raw: str) -> None:
    with pytest.raises(SystemExit, match=name):
        ServerSettings.from_env({name: raw})
