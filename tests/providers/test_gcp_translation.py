"""Pure translation helpers of the gcp provider: names, template keys, status, errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.rpc import status_pb2
from hypothesis import given
from hypothesis import strategies as st

from alphaswarm_controller.providers.gcp import cloudrun
from alphaswarm_controller.providers.gcp.clients import GcpSettings, is_loopback
from alphaswarm_controller.providers.gcp.errors import translate
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendUnavailableError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    SettingInvalid,
)

_CLOUD_RUN_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@given(dns_label, dns_label)
def test_every_name_pair_gives_a_valid_cloud_run_id(namespace: str, service_id: str) -> None:
    name = cloudrun.cloud_run_name(namespace, service_id)
    assert _CLOUD_RUN_ID.match(name), name


def test_names_that_read_alike_do_not_collide() -> None:
    assert cloudrun.cloud_run_name("a-b", "c") != cloudrun.cloud_run_name("a", "b-c")


def test_template_key_ignores_quantity_spelling() -> None:
    spec = DeploymentSpec("s", image="img")
    built = run_v2.RevisionTemplate(containers=[cloudrun.build_container(spec, None)])
    respelled = run_v2.RevisionTemplate(built)
    respelled.containers[0].resources.limits = {"cpu": "1000m", "memory": "536870912"}
    assert cloudrun.template_key(built) == cloudrun.template_key(respelled)


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
    ("error", "expected", "text"),
    [
        (gexc.PermissionDenied, BackendPermissionDenied, "roles/secretmanager.admin"),
        (gexc.Unauthenticated, InfrastructureProviderUnavailable, "credentials"),
        (gexc.InvalidArgument, InvalidSpecError, "backend says"),
        (gexc.Aborted, BackendConflictError, "backend says"),
        (gexc.FailedPrecondition, BackendRejectedError, "backend says"),
        (gexc.ResourceExhausted, BackendQuotaExceeded, "backend says"),
        (gexc.ServiceUnavailable, BackendUnavailableError, "backend says"),
    ],
)
def test_google_errors_map_to_provider_errors(
    error: Any, expected: type[Exception], text: str
) -> None:
    mapped = translate(error("backend says"), "secretmanager")
    assert isinstance(mapped, expected) and text in str(mapped)


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
        "ALPHASWARM_GCP_MODE": "GKE",
    }
    settings = GcpSettings.load(lambda name, default: env.get(f"ALPHASWARM_GCP_{name}", default))
    assert settings.endpoints["run"] == "127.0.0.1:9000"
    assert settings.endpoints["monitoring"] == "monitoring.example.internal:443"
    assert not settings.emulated, "a non-loopback endpoint keeps TLS and credentials"
    with pytest.raises(SettingInvalid) as caught:
        settings.validate()
    assert caught.value.metadata == {"setting": "ALPHASWARM_GCP_GKE_CLUSTER"}
    assert is_loopback("[::1]:8085") and is_loopback("localhost:1")
    assert not is_loopback("run.googleapis.com:443")
