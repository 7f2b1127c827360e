"""The GCP emulators refuse what the real services refuse, through the real SDK clients.

Each case is a documented rule (sources in the emulator modules); an emulator that
accepted it would hide the provider bug the rule exists to catch.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import container_v1, monitoring_v3, run_v2, secretmanager_v1
from google.cloud.container_v1.services.cluster_manager.transports import (
    ClusterManagerGrpcAsyncIOTransport,
)
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcAsyncIOTransport
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcAsyncIOTransport,
)
from google.protobuf import field_mask_pb2

from tests.fakes.faults import Kind
from tests.fakes.gcp_run import container_unhealthy
from tests.fakes.gcp_server import GcpEmulator

PARENT = "projects/p-test-1/locations/europe-west4"
IMAGE = "us-docker.pkg.dev/cloudrun/container/hello:latest"
GEN2 = run_v2.ExecutionEnvironment(run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2)


@dataclass
class Clients:
    run: run_v2.ServicesAsyncClient
    revisions: run_v2.RevisionsAsyncClient
    secrets: secretmanager_v1.SecretManagerServiceAsyncClient
    monitoring: monitoring_v3.MetricServiceAsyncClient
    container: container_v1.ClusterManagerAsyncClient


@pytest.fixture
def quiet() -> Iterator[GcpEmulator]:
    with GcpEmulator() as running:
        yield running


@pytest.fixture
async def clients(quiet: GcpEmulator) -> AsyncIterator[Clients]:
    def channel() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(quiet.address)

    made = Clients(
        run_v2.ServicesAsyncClient(transport=ServicesGrpcAsyncIOTransport(channel=channel())),
        run_v2.RevisionsAsyncClient(transport=RevisionsGrpcAsyncIOTransport(channel=channel())),
        secretmanager_v1.SecretManagerServiceAsyncClient(
            transport=SecretManagerServiceGrpcAsyncIOTransport(channel=channel())
        ),
        monitoring_v3.MetricServiceAsyncClient(
            transport=MetricServiceGrpcAsyncIOTransport(channel=channel())
        ),
        container_v1.ClusterManagerAsyncClient(
            transport=ClusterManagerGrpcAsyncIOTransport(channel=channel())
        ),
    )
    yield made
    for client in (made.run, made.revisions, made.secrets, made.monitoring, made.container):
        await client.transport.close()  # type: ignore[no-untyped-call]


def _service(
    cpu: str = "1",
    memory: str = "512Mi",
    *,
    concurrency: int = 0,
    idle: bool = False,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    environment: run_v2.ExecutionEnvironment | None = None,
) -> run_v2.Service:
    template = run_v2.RevisionTemplate(
        containers=[
            run_v2.Container(
                image=IMAGE,
                env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
                resources=run_v2.ResourceRequirements(
                    limits={"cpu": cpu, "memory": memory}, cpu_idle=idle
                ),
            )
        ],
        max_instance_request_concurrency=concurrency,
    )
    if environment is not None:
        template.execution_environment = environment
    return run_v2.Service(template=template, labels=labels or {})


async def _create(clients: Clients, service: run_v2.Service, service_id: str = "svc") -> object:
    return await clients.run.create_service(
        parent=PARENT, service=service, service_id=service_id, retry=None
    )


@pytest.mark.parametrize(
    ("service", "message"),
    [
        # cloud.google.com/run/docs/configuring/services/cpu, below 1 vCPU.
        (_service("500m", concurrency=80, idle=True), "concurrency > 1"),
        (_service("500m", concurrency=1, idle=False), "request-based billing"),
        (_service("500m", concurrency=1, idle=True, environment=GEN2), "first generation"),
        (_service("250m", "768Mi", concurrency=1, idle=True), "at most 512Mi"),
        (_service("500m", "2Gi", concurrency=1, idle=True), "at most 1Gi"),
        # The vCPU and memory table's minimums and maximums.
        (_service("4", "512Mi"), "between 2048Mi and 16384Mi"),
        (_service("6", "2Gi"), "between 4096Mi and 24576Mi"),
        (_service("1", "8Gi"), "between 128Mi and 4096Mi"),
        (_service("3"), "CPU must be between"),
        (_service("50m", concurrency=1, idle=True), "CPU must be between"),
        (_service("1", "64Mi"), "memory"),
        (_service("1", "256Mi", environment=GEN2), "memory"),
        # The container runtime contract and label rules.
        (_service(env={"PORT": "9"}), "reserved"),
        (_service(labels={"Team": "a"}), "label key"),
        (_service(labels={"team": "A"}), "label"),
    ],
)
async def test_cloud_run_refuses_what_cloud_run_refuses(
    clients: Clients, quiet: GcpEmulator, service: run_v2.Service, message: str
) -> None:
    with pytest.raises(gexc.InvalidArgument, match=message):
        await _create(clients, service)
    assert quiet.run.services == {}


async def test_unset_concurrency_below_one_cpu_defaults_to_one(
    clients: Clients, quiet: GcpEmulator
) -> None:
    # revision_template.proto: unset concurrency "defaults to 1 when requested CPU < 1".
    await _create(clients, _service("500m", idle=True))
    (service,) = quiet.run.services.values()
    assert service.template.max_instance_request_concurrency == 1


@pytest.mark.parametrize("service_id", ["2048-web", "web-", "Web", "w" * 50, "a_b"])
async def test_cloud_run_service_ids(clients: Clients, service_id: str) -> None:
    with pytest.raises(gexc.InvalidArgument, match="service_id"):
        await _create(clients, _service(), service_id)


async def test_cloud_run_operations_take_time_and_fill_defaults(
    clients: Clients, quiet: GcpEmulator
) -> None:
    operation = await _create(clients, _service("2", "1Gi"))
    assert not await operation.done(retry=None)  # type: ignore[attr-defined]
    service = await clients.run.get_service(name=f"{PARENT}/services/svc", retry=None)
    assert service.reconciling and not service.latest_ready_revision
    assert service.template.max_instance_request_concurrency == 80
    assert run_v2.RevisionTemplate.pb(service.template).timeout.seconds == 300
    done = await operation.result(timeout=10)  # type: ignore[attr-defined]
    assert not done.reconciling and done.latest_ready_revision


async def test_cloud_run_stale_etag_is_aborted(clients: Clients, quiet: GcpEmulator) -> None:
    quiet.operations.seconds = 0
    await _create(clients, _service())
    name = f"{PARENT}/services/svc"
    first = await clients.run.get_service(name=name, retry=None)
    second = run_v2.Service(first)
    second.labels = {"who": "second"}
    await clients.run.update_service(service=second, retry=None)
    first.labels = {"who": "first"}
    with pytest.raises(gexc.Aborted):
        await clients.run.update_service(service=first, retry=None)
    assert (await clients.run.get_service(name=name, retry=None)).labels == {"who": "second"}


def _annotated(template: dict[str, str], service: dict[str, str] | None = None) -> run_v2.Service:
    made = _service()
    made.template.annotations = template
    made.annotations = service or {}
    return made


@pytest.mark.parametrize(
    ("service", "message"),
    [
        # revision_template.proto: these namespaces "will be rejected".
        (_annotated({"run.googleapis.com/cpu-throttling": "false"}), "not supported"),
        (_annotated({"serving.knative.dev/creator": "me"}), "not supported"),
        (_annotated({"features.run.googleapis.com/x": "1"}), "not supported"),
        # service.proto: "rejected in new resources".
        (_annotated({}, {"autoscaling.knative.dev/maxScale": "3"}), "not supported"),
        (_annotated({}, {"cloud.googleapis.com/location": "x"}), "not supported"),
        # Kubernetes' annotation rules: qualified-name keys, 256 KiB in all.
        (_annotated({"bad key": "x"}), "annotation key"),
        (_annotated({"-leading/x": "x"}), "annotation key"),
        (_annotated({"a/" + "n" * 64: "x"}), "annotation key"),
        (_annotated({"big": "x" * (256 * 1024)}), "at most 262144"),
    ],
)
async def test_cloud_run_refuses_reserved_and_malformed_annotations(
    clients: Clients, quiet: GcpEmulator, service: run_v2.Service, message: str
) -> None:
    with pytest.raises(gexc.InvalidArgument, match=message):
        await _create(clients, service)
    assert quiet.run.services == {}


async def test_revisions_are_listed_newest_first_page_by_page_with_their_annotations(
    clients: Clients, quiet: GcpEmulator
) -> None:
    quiet.operations.seconds = 0
    await _create(clients, _annotated({"example.com/n": "1"}))
    name = f"{PARENT}/services/svc"
    for n in range(2, 6):
        current = await clients.run.get_service(name=name, retry=None)
        current.template.annotations = {"example.com/n": str(n)}
        await clients.run.update_service(service=current, retry=None)
    current = await clients.run.get_service(name=name, retry=None)
    current.scaling.manual_instance_count = 3  # a service-level change: no revision
    await clients.run.update_service(service=current, retry=None)
    pages = []
    token = ""
    while True:
        response = await clients.revisions.list_revisions(
            request=run_v2.ListRevisionsRequest(parent=name, page_size=2, page_token=token),
            retry=None,
        )
        pages.append([r.annotations["example.com/n"] for r in response.revisions])
        token = response.next_page_token
        if not token:
            break
    assert pages == [["5", "4"], ["3", "2"], ["1"]]
    newest = await clients.revisions.get_revision(
        name=(await clients.run.get_service(name=name, retry=None)).latest_created_revision,
        retry=None,
    )
    assert newest.name.startswith(f"{name}/revisions/svc-00005-")
    assert newest.service == name and not newest.reconciling
    assert {c.type_: c.state for c in newest.conditions} == {
        "Ready": run_v2.Condition.State.CONDITION_SUCCEEDED,
        "ContainerHealthy": run_v2.Condition.State.CONDITION_SUCCEEDED,
        "ResourcesAvailable": run_v2.Condition.State.CONDITION_SUCCEEDED,
    }
    with pytest.raises(gexc.NotFound):
        await clients.revisions.list_revisions(parent=f"{PARENT}/services/other", retry=None)
    with pytest.raises(gexc.InvalidArgument):
        await clients.revisions.get_revision(name="svc-00001-abc", retry=None)


async def test_a_failed_revision_keeps_traffic_on_the_last_ready_one(
    clients: Clients, quiet: GcpEmulator
) -> None:
    await (await _create(clients, _service())).result(timeout=10)  # type: ignore[attr-defined]
    name = f"{PARENT}/services/svc"
    ready = (await clients.run.get_service(name=name, retry=None)).latest_ready_revision
    broken = "us-docker.pkg.dev/team/app:crashes"
    quiet.run.break_image(broken, container_unhealthy())
    current = await clients.run.get_service(name=name, retry=None)
    current.template.containers[0].image = broken
    operation = await clients.run.update_service(service=current, retry=None)
    # The operation ends with the revision's error (code 9, FAILED_PRECONDITION).
    with pytest.raises(gexc.GoogleAPICallError, match="PORT=8080") as caught:
        await operation.result(timeout=10)  # type: ignore[no-untyped-call]
    assert caught.value.errors[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    after = await clients.run.get_service(name=name, retry=None)
    assert after.latest_ready_revision == ready != after.latest_created_revision
    assert [t.revision for t in after.traffic_statuses] == [ready.rsplit("/", 1)[1]]
    assert after.terminal_condition.state == run_v2.Condition.State.CONDITION_FAILED
    failed = await clients.revisions.get_revision(name=after.latest_created_revision, retry=None)
    conditions = {c.type_: c for c in failed.conditions}
    unhealthy = conditions["ContainerHealthy"]
    assert unhealthy.state == run_v2.Condition.State.CONDITION_FAILED
    assert unhealthy.revision_reason == (
        run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR
    )
    assert conditions["Ready"].state == run_v2.Condition.State.CONDITION_FAILED


async def _new_secret(clients: Clients) -> secretmanager_v1.Secret:
    return await clients.secrets.create_secret(
        parent="projects/p-test-1",
        secret_id="cfg",
        secret=secretmanager_v1.Secret(
            replication=secretmanager_v1.Replication(
                automatic=secretmanager_v1.Replication.Automatic()
            )
        ),
        retry=None,
    )


async def test_secret_payload_is_at_most_64_kib(clients: Clients, quiet: GcpEmulator) -> None:
    secret = await _new_secret(clients)
    limit = 64 * 1024
    await clients.secrets.add_secret_version(
        parent=secret.name, payload=secretmanager_v1.SecretPayload(data=b"x" * limit), retry=None
    )
    with pytest.raises(gexc.InvalidArgument, match="larger than 65536"):
        await clients.secrets.add_secret_version(
            parent=secret.name,
            payload=secretmanager_v1.SecretPayload(data=b"x" * (limit + 1)),
            retry=None,
        )
    assert len(quiet.secrets.versions[secret.name]) == 1


async def test_secret_etag_and_mask_rules(clients: Clients) -> None:
    secret = await _new_secret(clients)
    labels = field_mask_pb2.FieldMask(paths=["labels"])
    changed = secretmanager_v1.Secret(name=secret.name, etag=secret.etag, labels={"v": "1"})
    await clients.secrets.update_secret(secret=changed, update_mask=labels, retry=None)
    # docs/etags: "otherwise, it fails with a FAILED_PRECONDITION error".
    with pytest.raises(gexc.FailedPrecondition):
        await clients.secrets.update_secret(secret=changed, update_mask=labels, retry=None)
    with pytest.raises(gexc.InvalidArgument, match="update_mask"):
        await clients.secrets.update_secret(
            secret=secretmanager_v1.Secret(name=secret.name),
            update_mask=field_mask_pb2.FieldMask(),
            retry=None,
        )
    with pytest.raises(gexc.InvalidArgument, match="replication"):
        await clients.secrets.create_secret(
            parent="projects/p-test-1", secret_id="x", secret=secretmanager_v1.Secret(), retry=None
        )


async def test_secret_version_destroy_rules(clients: Clients) -> None:
    secret = await _new_secret(clients)
    added = await clients.secrets.add_secret_version(
        parent=secret.name, payload=secretmanager_v1.SecretPayload(data=b"{}"), retry=None
    )
    with pytest.raises(gexc.InvalidArgument, match="not a secret version name"):
        await clients.secrets.destroy_secret_version(
            name=f"{secret.name}/versions/latest", retry=None
        )
    with pytest.raises(gexc.FailedPrecondition, match="etag"):
        await clients.secrets.destroy_secret_version(
            request=secretmanager_v1.DestroySecretVersionRequest(name=added.name, etag='"x"'),
            retry=None,
        )
    destroyed = await clients.secrets.destroy_secret_version(name=added.name, retry=None)
    assert destroyed.state == secretmanager_v1.SecretVersion.State.DESTROYED
    with pytest.raises(gexc.FailedPrecondition, match="DESTROYED"):
        await clients.secrets.access_secret_version(name=added.name, retry=None)
    with pytest.raises(gexc.FailedPrecondition, match="already DESTROYED"):
        await clients.secrets.destroy_secret_version(name=added.name, retry=None)
    with pytest.raises(gexc.NotFound):
        await clients.secrets.destroy_secret_version(name=f"{secret.name}/versions/2", retry=None)


@pytest.mark.parametrize(
    ("kind", "operation", "error", "reason"),
    [
        (Kind.THROTTLED, "run:GetService", gexc.ResourceExhausted, "RATE_LIMIT_EXCEEDED"),
        (Kind.UNAVAILABLE, "run:GetService", gexc.ServiceUnavailable, None),
        (Kind.CONFLICT, "run:GetService", gexc.Aborted, None),
        (Kind.CONFLICT, "secretmanager:GetSecret", gexc.FailedPrecondition, None),
        (Kind.DENIED, "secretmanager:GetSecret", gexc.PermissionDenied, "IAM_PERMISSION_DENIED"),
    ],
)
async def test_faults_have_each_services_wire_form(
    clients: Clients,
    quiet: GcpEmulator,
    *,
    kind: Kind,
    operation: str,
    error: type[Exception],
    reason: str | None,
) -> None:
    quiet.faults.inject(operation, kind)
    with pytest.raises(error) as caught:
        if operation.startswith("run:"):
            await clients.run.get_service(name=f"{PARENT}/services/svc", retry=None)
        else:
            await clients.secrets.get_secret(name="projects/p-test-1/secrets/x", retry=None)
    assert getattr(caught.value, "reason", None) == reason
    assert quiet.faults.count(operation) == 1


async def test_monitoring_needs_one_metric_type(clients: Clients) -> None:
    request = monitoring_v3.ListTimeSeriesRequest(
        name="projects/p-test-1",
        filter='resource.type = "cloud_run_revision"',
        interval=monitoring_v3.TimeInterval(end_time={"seconds": 1_700_000_000}),
    )
    with pytest.raises(gexc.InvalidArgument, match="single metric type"):
        await clients.monitoring.list_time_series(request=request, retry=None)


async def test_cluster_names_are_full_paths(clients: Clients) -> None:
    with pytest.raises(gexc.InvalidArgument):
        await clients.container.get_cluster(name="prod", retry=None)


def test_one_lifecycle_start_stop_context_manager() -> None:
    with GcpEmulator() as running:
        host, port = running.address.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()
