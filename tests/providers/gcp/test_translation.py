"""Pure helpers of the gcp provider: names, limits, template keys, status, errors, settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from alphaswarm_controller.providers.gcp import cloudrun, limits
from alphaswarm_controller.providers.gcp.cloudrun_provider import CloudRunProvider
from alphaswarm_controller.providers.gcp.errors import translate
from alphaswarm_controller.providers.gcp.settings import GcpSettings, is_loopback
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    Resources,
    SettingInvalid,
)

_CLOUD_RUN_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
GiB = 2**30
MiB = 2**20


@given(dns_label, dns_label)
def test_every_name_pair_gives_a_valid_cloud_run_id(namespace: str, service_id: str) -> None:
    name = cloudrun.cloud_run_name(namespace, service_id)
    assert _CLOUD_RUN_ID.match(name), name


def test_names_that_read_alike_do_not_collide() -> None:
    assert cloudrun.cloud_run_name("a-b", "c") != cloudrun.cloud_run_name("a", "b-c")


def test_template_key_ignores_quantity_spelling() -> None:
    spec = DeploymentSpec("s", image="img")
    built = cloudrun.build_template(spec, None, "")
    respelled = run_v2.RevisionTemplate(built)
    respelled.containers[0].resources.limits = {"cpu": "1000m", "memory": "536870912"}
    assert cloudrun.template_key(built) == cloudrun.template_key(respelled)


@pytest.mark.parametrize(
    ("cpu", "memory", "fits"),
    [
        # The vCPU and memory table (cloud.google.com/run/docs/configuring/services/cpu).
        (80, 512 * MiB, True),
        (80, 513 * MiB, False),
        (499, 512 * MiB, True),
        (500, 1 * GiB, True),
        (500, 1 * GiB + MiB, False),
        (999, 1 * GiB, True),
        (1000, 4 * GiB, True),
        (1000, 4 * GiB + MiB, False),
        (2000, 8 * GiB, True),
        (2000, 9 * GiB, False),
        (4000, 2 * GiB, True),
        (4000, 2 * GiB - MiB, False),
        (4000, 16 * GiB, True),
        (6000, 4 * GiB, True),
        (6000, 3 * GiB, False),
        (6000, 24 * GiB, True),
        (8000, 4 * GiB, True),
        (8000, 32 * GiB, True),
        (8000, 3 * GiB, False),
    ],
)
def test_the_cpu_and_memory_table(cpu: int, memory: int, fits: bool) -> None:
    resources = Resources(cpu=f"{cpu}m", memory=str(memory))
    assert (limits.violations(resources) == []) is fits


@given(
    st.sampled_from([80, 250, 499, 500, 750, 999, 1000, 2000, 4000, 6000, 8000]),
    st.one_of(st.none(), st.integers(128, 32 * 1024)),
)
def test_what_the_provider_sends_is_a_shape_cloud_run_accepts(
    cpu: int, memory_mib: int | None
) -> None:
    resources = Resources(cpu=f"{cpu}m", memory=f"{memory_mib}Mi" if memory_mib else "")
    if limits.violations(resources):
        return
    shape = limits.shape(resources)
    least, most = limits.WHOLE_CPU_MEMORY.get(shape.cpu_milli, (limits.MIN_MEMORY, 1 * GiB))
    assert least <= shape.memory <= most
    if shape.fractional:
        assert (shape.concurrency, shape.request_based_billing) == (1, True)
        assert shape.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1
    else:
        assert (shape.concurrency, shape.request_based_billing) == (80, False)


def _service(**fields: object) -> run_v2.Service:
    spec = DeploymentSpec("web", "prod", image="img", replicas=2)
    service = cloudrun.build_service(spec)
    for key, value in fields.items():
        setattr(service, key, value)
    return service


def test_status_while_reconciling_is_pending() -> None:
    condition = run_v2.Condition(type_="Ready", state=run_v2.Condition.State.CONDITION_RECONCILING)
    status = cloudrun.to_status(_service(reconciling=True, terminal_condition=condition), "gcp")
    assert (status.state, status.desired_replicas, status.ready_replicas) == (
        DeploymentState.PENDING,
        2,
        0,
    )
    assert (status.namespace, status.service_id) == ("prod", "web")


def test_failed_first_revision_is_failed_with_the_message() -> None:
    condition = run_v2.Condition(
        type_="Ready", state=run_v2.Condition.State.CONDITION_FAILED, message="no such image"
    )
    status = cloudrun.to_status(_service(terminal_condition=condition), "gcp")
    assert status.state is DeploymentState.FAILED and status.message == "no such image"


def test_serving_service_reports_instances_of_its_revision() -> None:
    revision = "projects/p/locations/l/revisions/web-00002-abc"
    status = cloudrun.to_status(
        _service(
            terminal_condition=run_v2.Condition(
                type_="Ready", state=run_v2.Condition.State.CONDITION_SUCCEEDED
            ),
            latest_ready_revision=revision,
            latest_created_revision=revision,
            traffic_statuses=[run_v2.TrafficTargetStatus(revision="web-00002-abc", percent=100)],
        ),
        "gcp",
    )
    assert status.state is DeploymentState.RUNNING
    assert [i.instance_id for i in status.instances] == ["web-00002-abc-0", "web-00002-abc-1"]


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("team", True),
        ("équipe", True),
        ("t2_x-y", True),
        ("Team", False),
        ("2team", False),
        ("a/b", False),
        ("x" * 63, True),
        ("x" * 64, False),
    ],
)
def test_label_keys_follow_google_cloud_rules(key: str, ok: bool) -> None:
    spec = DeploymentSpec("s", image="img", labels={key: "v"})
    violations = [v for v in cloudrun._label_violations(spec.labels) if "labels[" in v.field]
    assert (violations == []) is ok


def _google(kind: Any, *args: Any) -> Any:
    """An api_core exception (their constructors are untyped)."""
    return kind(*args)


def _rate_limited(reason: str) -> gexc.ResourceExhausted:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="googleapis.com")
    return gexc.ResourceExhausted(  # type: ignore[no-untyped-call]
        "quota", details=[info], error_info=info
    )


@pytest.mark.parametrize(
    ("error", "expected", "text"),
    [
        (
            _google(gexc.PermissionDenied, "backend says"),
            BackendPermissionDenied,
            "roles/secretmanager",
        ),
        (
            _google(gexc.Unauthenticated, "backend says"),
            InfrastructureProviderUnavailable,
            "credentials",
        ),
        (_google(gexc.InvalidArgument, "backend says"), InvalidSpecError, "backend says"),
        (_google(gexc.Aborted, "backend says"), BackendConflictError, "backend says"),
        (_google(gexc.FailedPrecondition, "backend says"), BackendRejectedError, "backend says"),
        (_rate_limited("RATE_LIMIT_EXCEEDED"), BackendUnavailableError, "throttling"),
        (_rate_limited("RESOURCE_QUOTA_EXCEEDED"), BackendQuotaExceeded, "quota"),
        (_google(gexc.ServiceUnavailable, "backend says"), BackendUnavailableError, "backend says"),
        (
            _google(gexc.RetryError, "timeout", _google(gexc.ServiceUnavailable, "down")),
            BackendTimeoutError,
            "down",
        ),
    ],
)
def test_google_errors_map_to_provider_errors(
    error: Any, expected: type[Exception], text: str
) -> None:
    mapped = translate(error, "secretmanager")
    assert isinstance(mapped, expected) and text in str(mapped)


def test_throttling_is_unavailable_with_its_own_reason() -> None:
    mapped = translate(_rate_limited("RATE_LIMIT_EXCEEDED"), "run")
    assert (mapped.code, mapped.reason) == ("UNAVAILABLE", "BACKEND_THROTTLED")


def test_failed_operation_status_keeps_its_code() -> None:
    failure = gexc.GoogleAPICallError(  # type: ignore[no-untyped-call]
        "op failed", errors=(status_pb2.Status(code=9, message="image missing"),)
    )
    mapped = translate(failure, "run")
    assert isinstance(mapped, BackendRejectedError) and "image missing" in str(mapped)


def test_settings_read_endpoints_and_validate() -> None:
    env = {
        "ALPHASWARM_GCP_API_ENDPOINT": "127.0.0.1:9000",
        "ALPHASWARM_GCP_MONITORING_ENDPOINT": "monitoring.example.internal:443",
        "ALPHASWARM_GCP_SERVICE_ACCOUNT": "runtime@my-project.iam.gserviceaccount.com",
    }
    settings = GcpSettings.load(CloudRunProvider(env=env))
    assert settings.endpoints["run"] == "127.0.0.1:9000"
    assert settings.endpoints["monitoring"] == "monitoring.example.internal:443"
    assert settings.service_account == "runtime@my-project.iam.gserviceaccount.com"
    assert not settings.emulated, "a non-loopback endpoint keeps TLS and credentials"
    settings.validate()
    with pytest.raises(SettingInvalid) as caught:
        settings.validate_gke()
    assert caught.value.metadata == {"setting": "ALPHASWARM_GCP_GKE_CLUSTER"}
    assert is_loopback("[::1]:8085") and is_loopback("localhost:1")
    assert not is_loopback("run.googleapis.com:443")


@pytest.mark.parametrize("name", ["POLL_INTERVAL", "OPERATION_TIMEOUT", "METRICS_WINDOW"])
def test_a_malformed_duration_names_its_variable(name: str) -> None:
    with pytest.raises(SettingInvalid) as caught:
        CloudRunProvider(env={f"ALPHASWARM_GCP_{name}": "soon"})
    assert caught.value.metadata == {"setting": f"ALPHASWARM_GCP_{name}"}
