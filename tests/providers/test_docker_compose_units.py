"""Pure helpers of the docker_compose provider: no engine needed."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from alphaswarm_controller.providers.docker_compose import compose, engine, options
from alphaswarm_controller.providers.docker_compose.definitions import Definition
from alphaswarm_controller.providers.docker_compose.stats import usage
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentSpec,
    InvalidSpecError,
    PortSpec,
    ResourceNotFoundError,
    Resources,
)

ENV = {"DOCKER_HOST": "unix:///run/x.sock"}


def _api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("engine said no", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("error", "expected", "code"),
    [
        (
            _api_error(500, "Bind for 0.0.0.0:80 failed: port is already allocated"),
            BackendRejectedError,
            "FAILED_PRECONDITION",
        ),
        (_api_error(404, "No such image: x:1"), ResourceNotFoundError, "NOT_FOUND"),
        (_api_error(409, "name already in use"), BackendConflictError, "ABORTED"),
        (_api_error(400, "invalid reference format"), BackendRejectedError, "FAILED_PRECONDITION"),
        (_api_error(503, "shutting down"), BackendUnavailableError, "UNAVAILABLE"),
        (requests.exceptions.ConnectionError("refused"), BackendUnavailableError, "UNAVAILABLE"),
        (requests.exceptions.ReadTimeout("slow"), BackendTimeoutError, "DEADLINE_EXCEEDED"),
    ],
)
def test_engine_errors_map_to_provider_errors(
    error: Exception, expected: type[Exception], code: str
) -> None:
    translated = engine.translate(error, ENV, what="creating web-1")
    assert isinstance(translated, expected)
    assert translated.code == code
    assert "creating web-1" in translated.message or "DOCKER_HOST" in translated.message


def test_unreachable_message_names_every_setting_and_no_secret() -> None:
    env = {"DOCKER_HOST": "tcp://10.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c"}
    error = engine.unreachable(env, OSError("refused"))
    for name in engine.ENV_VARS:
        assert name in error.message
    assert error.metadata["env"] == "DOCKER_HOST,DOCKER_TLS_VERIFY,DOCKER_CERT_PATH"


def test_options_are_validated_all_at_once() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        options.parse(
            {"restart": "sometimes", "healthcheck_retries": "0", "volumes": "bad", "colour": "red"}
        )
    fields = sorted(v.field for v in caught.value.violations)
    assert fields == [
        "spec.provider_options['colour']",
        "spec.provider_options['healthcheck_retries']",
        "spec.provider_options['restart']",
        "spec.provider_options['volumes']",
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("healthcheck_retries", "\u00b2"),  # str.isdigit() accepts it; int() did not: INTERNAL
        ("healthcheck_retries", "9" * 5000),  # past int()'s 4300 digits: INTERNAL
        ("healthcheck_retries", "3\n"),
        ("volumes", "data:/d\n/e"),
        ("volumes", "data:/d\x1b[2J"),
        ("volumes", "data\n:/d"),
    ],
)
def test_option_values_are_full_matched(key: str, value: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        options.parse({key: value})
    assert [v.field for v in caught.value.violations] == [f"spec.provider_options[{key!r}]"]


def test_options_translate_to_engine_settings() -> None:
    parsed = options.parse(
        {"healthcheck": "test -f /ok", "healthcheck_interval": "1.5s", "volumes": "data:/d:ro"}
    )
    assert parsed.healthcheck_config() == {
        "test": ["CMD-SHELL", "test -f /ok"],
        "interval": 1_500_000_000,
        "timeout": 5_000_000_000,
        "retries": 3,
        "start_period": 0,
    }
    assert parsed.volumes == (options.VolumeMount("data", "/d", True),)
    assert options.parse({}).restart == "unless-stopped"


def test_list_entry_parsing_reads_health_from_the_status_text() -> None:
    labels = {compose.PROJECT: "p", compose.SERVICE: "web", compose.NUMBER: "2"}
    entry: dict[str, object] = {
        "Id": "abc123def456789",
        "Names": ["/p-web-2"],
        "State": "running",
        "Status": "Up 3 seconds (health: starting)",
        "Image": "img:1",
        "Labels": labels,
    }
    ref = compose.ContainerRef.from_list_entry(entry)
    assert ref is not None
    assert (ref.name, ref.number, ref.health, ref.ready, ref.managed) == (
        "p-web-2",
        2,
        "starting",
        False,
        False,
    )
    oneoff = {**entry, "Labels": {**labels, compose.ONEOFF: "True"}}
    assert compose.ContainerRef.from_list_entry(oneoff) is None


def test_user_labels_cannot_override_compose_labels() -> None:
    labels = compose.container_labels(
        "p", "web", 1, "h" * 64, "sha256:x", {compose.PROJECT: "evil", "team": "a"}
    )
    assert labels[compose.PROJECT] == "p"
    assert labels["team"] == "a"
    assert compose.user_labels(labels) == {"team": "a"}


def test_definition_body_round_trips() -> None:
    spec = DeploymentSpec(
        "web",
        "p",
        image="img:1",
        command=("run",),
        env={"A": "1"},
        labels={"team": "a"},
        ports=(PortSpec(80, 8080),),
        resources=Resources(cpu="500m", memory="64Mi"),
        provider_options={"restart": "always"},
    )
    definition = Definition.from_spec(spec).with_config({"K": "v"})
    volume = {
        "Labels": {
            "dev.alphaswarm.project": "p",
            "dev.alphaswarm.service": "web",
            "dev.alphaswarm.generation": "3",
            "dev.alphaswarm.body": definition.to_body(),
        }
    }
    back = Definition.from_volume(volume)
    assert back is not None
    assert back.same_spec(definition)
    assert (back.config, back.config_version, back.generation) == ({"K": "v"}, 1, 3)
    assert back.effective_env() == {"A": "1", "K": "v"}
    assert Definition.from_volume({"Labels": {"dev.alphaswarm.body": "{"}}) is None


def test_usage_follows_docker_stats_arithmetic() -> None:
    frame = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000},
            "system_cpu_usage": 20_000_000,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 10_000_000},
        "memory_stats": {"usage": 10_000, "stats": {"cache": 4_000}},
        "networks": {
            "eth0": {"rx_bytes": 5, "tx_bytes": 7},
            "eth1": {"rx_bytes": 1, "tx_bytes": 1},
        },
    }
    assert usage(frame) == (40.0, 6_000, 6, 8)
