"""Pure helpers of the docker_compose provider: no engine needed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import docker.errors
import pytest
import requests

from alphaswarm_controller.providers.docker_compose import compose, engine, images, options
from alphaswarm_controller.providers.docker_compose.definitions import Definition
from alphaswarm_controller.providers.docker_compose.sealing import Sealer, SecretsUnreadable, load
from alphaswarm_controller.providers.docker_compose.stats import (
    cpu_mark,
    cpu_percent,
    has_interval,
    usage,
)
from alphaswarm_core.providers.errors import SettingInvalid
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
from tests.providers.docker_compose.support import call_deadline

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


def test_definition_body_round_trips_with_secrets_sealed() -> None:
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
    sealer = Sealer.from_key(bytes(range(32)))
    data = {"K": "v", "secret.TOKEN": "hunter2"}
    definition = Definition.from_spec(spec).with_config(data, sealer, {})
    body = definition.to_body()
    assert "hunter2" not in body
    volume = {
        "Labels": {
            "dev.alphaswarm.project": "p",
            "dev.alphaswarm.service": "web",
            "dev.alphaswarm.generation": "3",
            "dev.alphaswarm.body": body,
        }
    }
    back = Definition.from_volume(volume)
    assert back is not None
    assert back.same_spec(definition)
    assert (back.config, back.config_version, back.generation) == ({"K": "v"}, 1, 3)
    assert back.shown_config() == {"K": "v", "secret.TOKEN": "<secret>"}
    assert "hunter2" not in json.dumps(back.hashed_env())
    assert back.effective_env(back.secret_values(sealer)) == {
        "A": "1",
        "K": "v",
        "TOKEN": "hunter2",
    }
    # An unchanged secret keeps its sealed value (replicas are not replaced for nothing).
    again = back.with_config({**data, "K": "w"}, sealer, back.secret_values(sealer))
    assert again.secrets == back.secrets
    assert Definition.from_volume({"Labels": {"dev.alphaswarm.body": "{"}}) is None


def test_a_sealed_value_opens_only_for_its_own_service_and_key() -> None:
    sealer = Sealer.from_key(bytes(range(32)))
    token = sealer.seal("p", "web", "secret.TOKEN", "hunter2")
    assert sealer.unseal("p", "web", "secret.TOKEN", token) == "hunter2"
    for project, service, key in (("p", "api", "secret.TOKEN"), ("q", "web", "secret.TOKEN")):
        with pytest.raises(SecretsUnreadable) as caught:
            sealer.unseal(project, service, key, token)
        assert caught.value.code == "FAILED_PRECONDITION"
        assert "hunter2" not in caught.value.message
    other = Sealer.from_key(bytes(32))
    with pytest.raises(SecretsUnreadable):
        other.unseal("p", "web", "secret.TOKEN", token)
    assert other.key_id != sealer.key_id


def test_schema_1_definitions_keep_working_and_are_sealed_on_the_next_write() -> None:
    legacy_body = json.dumps(
        {
            "image": "img:1",
            "command": [],
            "env": {},
            "labels": {},
            "ports": [],
            "resources": {"cpu": "", "memory": ""},
            "options": {},
            "schema": 1,
            "config": {"K": "v", "secret.TOKEN": "hunter2"},
            "config_version": 4,
        }
    )
    labels = {
        "dev.alphaswarm.project": "p",
        "dev.alphaswarm.service": "web",
        "dev.alphaswarm.generation": "2",
        "dev.alphaswarm.body": legacy_body,
    }
    legacy = Definition.from_volume({"Labels": labels})
    assert legacy is not None and legacy.legacy_plain
    assert legacy.secret_values(None) == {"secret.TOKEN": "hunter2"}
    with pytest.raises(AssertionError):
        legacy.to_body()  # never stored in clear again
    sealer = Sealer.from_key(bytes(range(32)))
    sealed = legacy.sealed(sealer)
    assert "hunter2" not in sealed.to_body()
    assert sealed.secret_values(sealer) == {"secret.TOKEN": "hunter2"}


def test_key_file_must_be_private_and_hold_32_bytes(tmp_path: Path) -> None:
    setting = "ALPHASWARM_DOCKER_COMPOSE_SECRET_KEY_FILE"
    with pytest.raises(SettingInvalid) as caught:
        load("", setting)
    assert caught.value.metadata["setting"] == setting
    assert caught.value.code == "FAILED_PRECONDITION"
    key = tmp_path / "key"
    key.write_bytes(base64.b64encode(bytes(32)))
    key.chmod(0o644)
    with pytest.raises(SettingInvalid, match="chmod 600"):
        load(str(key), setting)
    key.chmod(0o600)
    assert load(str(key), setting).key_id == Sealer.from_key(bytes(32)).key_id
    key.write_bytes(base64.b64encode(bytes(16)))
    with pytest.raises(SettingInvalid, match="32 bytes"):
        load(str(key), setting)
    with pytest.raises(SettingInvalid, match="cannot read"):
        load(str(tmp_path / "missing"), setting)


def _frame(total: int, system: int, pre_total: int, pre_system: int) -> dict[str, object]:
    return {
        "cpu_stats": {
            "cpu_usage": {"total_usage": total, "percpu_usage": [0, 0]},
            "system_cpu_usage": system,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
        "memory_stats": {"usage": 10_000, "stats": {"cache": 4_000}},
        "networks": {
            "eth0": {"rx_bytes": 5, "tx_bytes": 7},
            "eth1": {"rx_bytes": 1, "tx_bytes": 1},
        },
    }


def test_cpu_percent_is_percent_of_one_core() -> None:
    # The host ran 2 CPUs for 1 s (2e9 ns of host time); the container used 0.5 s of
    # CPU: half a core, 50 % in MetricSample.cpu_percent's unit.
    frame = _frame(1_500_000_000, 12_000_000_000, 1_000_000_000, 10_000_000_000)
    assert cpu_percent(frame) == 50.0
    assert usage(frame) == (6_000, 6, 8)


def test_cpu_percent_is_measured_over_the_interval_since_the_last_sample() -> None:
    earlier = cpu_mark(_frame(1_000_000_000, 10_000_000_000, 0, 0))
    # 10 s later (2e10 ns of host time on 2 CPUs): 10 s of CPU used = one core busy.
    frame = _frame(11_000_000_000, 30_000_000_000, 10_900_000_000, 29_800_000_000)
    assert cpu_percent(frame, since=earlier) == 100.0


def test_a_streams_first_frame_has_no_interval() -> None:
    # The engine's first frame of a stream has empty precpu_stats; the docker CLI's
    # arithmetic would then divide CPU time since start by host time since boot.
    first = _frame(25_000_000, 4_600_000_000_000, 0, 0)
    assert not has_interval(first)
    assert cpu_percent(first) == 0.0
    restarted = _frame(1_000, 30_000_000_000, 0, 0)
    assert cpu_percent(restarted, since=cpu_mark(_frame(9_000_000, 20_000_000_000, 0, 0))) == 0.0


def test_image_references_follow_the_engine_grammar() -> None:
    good = [
        "busybox",
        "busybox:1.36",
        "library/busybox:latest",
        "registry.example.com:5000/team/app:v1.2-rc_3",
        "127.0.0.1:5000/app@sha256:" + "a" * 64,
        "sha256:" + "b" * 64,
        "c" * 64,
    ]
    bad = ["Busybox", "busybox:", "a//b", "-a", "app:" + "t" * 129, "app@sha256:short"]
    assert [images.check_reference(ref, "spec.image") for ref in good] == [[]] * len(good)
    for ref in bad:
        assert images.check_reference(ref, "spec.image"), ref


def test_an_image_matches_its_reference_not_an_id_prefix() -> None:
    inspected = {
        "Id": "sha256:" + "d" * 64,
        "RepoTags": ["busybox:latest", "registry.example.com/app:1"],
        "RepoDigests": ["busybox@sha256:" + "e" * 64],
    }
    assert images.names_image("busybox", inspected)
    assert images.names_image("docker.io/library/busybox:latest", inspected)
    assert images.names_image("library/busybox", inspected)
    assert images.names_image("registry.example.com/app:1", inspected)
    assert images.names_image("busybox@sha256:" + "e" * 64, inspected)
    assert images.names_image("d" * 64, inspected)
    assert not images.names_image("dddddddddddd", inspected), "an ID prefix is not a name"
    assert not images.names_image("busybox:1", inspected)


def test_deadline_caps_every_request_timeout() -> None:
    assert engine.bounded_timeout(None, default=30.0) == 30.0
    assert engine.bounded_timeout(40.0, default=30.0) == 40.0
    with call_deadline(5.0):
        capped = engine.bounded_timeout(None, default=30.0)
        assert isinstance(capped, float) and 4.0 < capped <= 5.0
        single = engine.bounded_timeout(40.0, default=30.0)
        assert isinstance(single, float) and single <= 5.0
        pair = engine.bounded_timeout((10.0, 60.0), default=30.0)
        assert isinstance(pair, tuple) and max(pair) <= 5.0
        with engine.undoing():
            assert engine.bounded_timeout(40.0, default=30.0) == 40.0


def test_volume_targets_are_checked_before_any_call() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        options.parse({"volumes": "a:/, b:/data/../etc, c:/d, e:/d, f:/x\nboom"})
    described = " ".join(v.description for v in caught.value.violations)
    assert "below /" in described and "mounted twice" in described
    assert len(caught.value.violations) == 4


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
