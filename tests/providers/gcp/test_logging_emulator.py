"""The Cloud Logging emulator and the Cloud Run emulator's instances and delete, through the
real SDK clients: each case is a documented rule (sources in the emulator modules)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2AsyncClient
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcAsyncIOTransport,
)
from google.cloud.logging_v2.types import (
    ListLogEntriesRequest,
    TailLogEntriesRequest,
    TailLogEntriesResponse,
)
from google.cloud.logging_v2.types import (
    LogEntry as CloudLogEntry,
)
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport
from google.protobuf import duration_pb2

from tests.fakes.gcp_server import GcpEmulator

PROJECT = "p-test-1"
PARENT = f"projects/{PROJECT}/locations/europe-west4"
NAME = f"{PARENT}/services/svc"
IMAGE = "us-docker.pkg.dev/cloudrun/container/hello:latest"
SERVICE_FILTER = 'resource.type = "cloud_run_revision" AND resource.labels.service_name = "svc"'


@pytest.fixture
def quiet() -> Iterator[GcpEmulator]:
    with GcpEmulator(operation_seconds=0, log_interval=0.05) as running:
        yield running


@pytest.fixture
async def run(quiet: GcpEmulator) -> AsyncIterator[run_v2.ServicesAsyncClient]:
    channel = grpc.aio.insecure_channel(quiet.address)
    client = run_v2.ServicesAsyncClient(transport=ServicesGrpcAsyncIOTransport(channel=channel))
    yield client
    await client.transport.close()  # type: ignore[no-untyped-call]


@pytest.fixture
async def logs(quiet: GcpEmulator) -> AsyncIterator[LoggingServiceV2AsyncClient]:
    channel = grpc.aio.insecure_channel(quiet.address)
    client = LoggingServiceV2AsyncClient(
        transport=LoggingServiceV2GrpcAsyncIOTransport(channel=channel)
    )
    yield client
    await client.transport.close()  # type: ignore[no-untyped-call]


async def _start(run: run_v2.ServicesAsyncClient, count: int = 2) -> run_v2.Service:
    service = run_v2.Service(
        template=run_v2.RevisionTemplate(
            containers=[run_v2.Container(image=IMAGE, command=["/srv"], args=["--x"])]
        ),
        scaling=run_v2.ServiceScaling(
            scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL, manual_instance_count=count
        ),
    )
    operation = await run.create_service(
        parent=PARENT, service=service, service_id="svc", retry=None
    )
    created: run_v2.Service = await operation.result(timeout=10)  # type: ignore[no-untyped-call]
    return created


async def _list(
    logs: LoggingServiceV2AsyncClient, **fields: object
) -> tuple[list[CloudLogEntry], str]:
    request = ListLogEntriesRequest(resource_names=[f"projects/{PROJECT}"], **fields)
    pager = await logs.list_log_entries(request=request, retry=None)
    async for page in pager.pages:  # the first page only: no further request
        return list(page.entries), str(page.next_page_token)
    raise AssertionError("a pager has a first page")


def _nanos(entry: CloudLogEntry) -> int:
    return int(CloudLogEntry.pb(entry).timestamp.ToNanoseconds())


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"order_by": "insertId desc"}, "order_by"),
        ({"order_by": "timestamp"}, "order_by"),
        ({"filter": 'resource.type = "cloud_run_revision'}, "Unparseable"),
        ({"filter": '(logName = "a" OR logName = "b"'}, "parenthesis"),
        ({"filter": 'resource.type = "a" and logName = "b"'}, "AND"),
        ({"filter": "resource.type = cloud_run_revision"}, "quoted"),
        ({"filter": 'timestamp >= "yesterday"'}, "RFC 3339"),
        ({"filter": 'textPayload : "x"'}, "Unparseable"),
        ({"filter": 'resource.type = "' + "x" * 20_000 + '"'}, "20000"),
    ],
)
async def test_list_refuses_what_cloud_logging_refuses(
    logs: LoggingServiceV2AsyncClient, fields: dict[str, object], match: str
) -> None:
    with pytest.raises(gexc.InvalidArgument, match=match):
        await _list(logs, **fields)


async def test_resource_names_are_required_and_bounded(
    logs: LoggingServiceV2AsyncClient,
) -> None:
    with pytest.raises(gexc.InvalidArgument, match="resource_names"):
        await logs.list_log_entries(request=ListLogEntriesRequest(), retry=None)
    many = [f"projects/{PROJECT}"] * 101
    with pytest.raises(gexc.InvalidArgument, match="at most 100"):
        await logs.list_log_entries(request=ListLogEntriesRequest(resource_names=many), retry=None)


async def test_instances_write_lines_paged_with_cursor_tokens(
    quiet: GcpEmulator, run: run_v2.ServicesAsyncClient, logs: LoggingServiceV2AsyncClient
) -> None:
    await _start(run, count=2)
    with quiet.plumbing.lock:
        instances = quiet.run.live_instances(NAME)
    assert len(instances) == 2
    assert len({i.instance_id for i in instances}) == 2
    assert all(len(i.instance_id) == 96 for i in instances)  # Cloud Run's are long hex ids
    await asyncio.sleep(0.5)  # about ten lines each
    stdout = f'logName = "projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"'
    query = f"{SERVICE_FILTER} AND {stdout}"
    first, token = await _list(logs, filter=query, page_size=3, order_by="timestamp desc")
    assert len(first) == 3 and token
    stamps = [_nanos(e) for e in first]
    assert stamps == sorted(stamps, reverse=True)
    second, _ = await _list(
        logs, filter=query, page_size=3, order_by="timestamp desc", page_token=token
    )
    assert not {e.insert_id for e in first} & {e.insert_id for e in second}
    assert max(_nanos(e) for e in second) <= min(stamps)
    entry = first[0]
    assert entry.text_payload.startswith("/srv --x line ")
    assert entry.resource.labels["revision_name"].startswith("svc-00001-")
    assert entry.labels["instanceId"] in {i.instance_id for i in instances}
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        await _list(logs, filter=SERVICE_FILTER, page_size=3, page_token=token)
    default, _ = await _list(logs, filter=SERVICE_FILTER)
    assert len(default) <= 50


async def test_empty_pages_carry_a_token(
    quiet: GcpEmulator, run: run_v2.ServicesAsyncClient, logs: LoggingServiceV2AsyncClient
) -> None:
    await _start(run, count=1)
    await asyncio.sleep(0.2)
    quiet.logging.empty_pages = 1
    entries, token = await _list(logs, filter=SERVICE_FILTER)
    assert entries == [] and token
    entries, _ = await _list(logs, filter=SERVICE_FILTER, page_token=token)
    assert entries


async def test_read_quota_per_minute(quiet: GcpEmulator, logs: LoggingServiceV2AsyncClient) -> None:
    quiet.logging.quota.limit = 2
    await _list(logs)
    await _list(logs)
    with pytest.raises(gexc.ResourceExhausted, match="Read requests per minute") as caught:
        await _list(logs)
    assert caught.value.reason == "RATE_LIMIT_EXCEEDED"


async def _tail(
    logs: LoggingServiceV2AsyncClient, request: TailLogEntriesRequest, done: asyncio.Event
) -> AsyncIterator[TailLogEntriesResponse]:
    async def requests() -> AsyncIterator[TailLogEntriesRequest]:
        yield request
        await done.wait()

    responses = await logs.tail_log_entries(requests=requests())
    return aiter(responses)


async def test_tail_sends_new_entries_in_order_and_limits_sessions(
    quiet: GcpEmulator, run: run_v2.ServicesAsyncClient, logs: LoggingServiceV2AsyncClient
) -> None:
    await _start(run, count=1)
    done = asyncio.Event()
    request = TailLogEntriesRequest(
        resource_names=[f"projects/{PROJECT}"],
        filter=SERVICE_FILTER,
        buffer_window=duration_pb2.Duration(nanos=200_000_000),
    )
    try:
        async with asyncio.timeout(30):
            opened = [await _tail(logs, request, done) for _ in range(10)]
            response = await anext(aiter(opened[0]))
            stamps = [_nanos(e) for e in response.entries]
            assert stamps and stamps == sorted(stamps)
            eleventh = await _tail(logs, request, done)
            with pytest.raises(gexc.ResourceExhausted, match="live-tailing"):
                await anext(aiter(eleventh))
    finally:
        done.set()


async def test_tail_buffer_window_is_bounded(logs: LoggingServiceV2AsyncClient) -> None:
    done = asyncio.Event()
    request = TailLogEntriesRequest(
        resource_names=[f"projects/{PROJECT}"], buffer_window=duration_pb2.Duration(seconds=61)
    )
    try:
        responses = await _tail(logs, request, done)
        with pytest.raises(gexc.InvalidArgument, match="buffer_window"):
            await anext(aiter(responses))
    finally:
        done.set()


async def test_scaling_starts_and_stops_instances(
    quiet: GcpEmulator, run: run_v2.ServicesAsyncClient
) -> None:
    service = await _start(run, count=2)
    with quiet.plumbing.lock:
        before = {i.instance_id for i in quiet.run.live_instances(NAME)}
    service.scaling.manual_instance_count = 3
    await (await run.update_service(service=service, retry=None)).result(timeout=10)  # type: ignore[no-untyped-call]
    with quiet.plumbing.lock:
        three = {i.instance_id for i in quiet.run.live_instances(NAME)}
    assert len(three) == 3 and before < three
    service = await run.get_service(name=NAME, retry=None)
    service.template.containers[0].args = ["--y"]  # a new revision replaces them all
    await (await run.update_service(service=service, retry=None)).result(timeout=10)  # type: ignore[no-untyped-call]
    with quiet.plumbing.lock:
        rolled = quiet.run.live_instances(NAME)
    assert len(rolled) == 3 and not {i.instance_id for i in rolled} & three
    assert all(i.revision.startswith("svc-00002-") for i in rolled)


async def test_delete_is_an_operation_that_takes_revisions_and_instances(
    quiet: GcpEmulator, run: run_v2.ServicesAsyncClient
) -> None:
    service = await _start(run, count=1)
    stale = service.etag
    service.labels = {"who": "me"}
    await (await run.update_service(service=service, retry=None)).result(timeout=10)  # type: ignore[no-untyped-call]
    with pytest.raises(gexc.Aborted):
        await run.delete_service(request=run_v2.DeleteServiceRequest(name=NAME, etag=stale))
    quiet.operations.seconds = 3600.0  # until released below
    operation = await run.delete_service(name=NAME, retry=None)
    deleting = await run.get_service(name=NAME, retry=None)
    assert deleting.reconciling and "delete_time" in deleting
    with pytest.raises(gexc.FailedPrecondition, match="being deleted"):
        await run.update_service(service=deleting, retry=None)
    quiet.operations.seconds = 0
    quiet.operations.release()
    await operation.result(timeout=10)  # type: ignore[no-untyped-call]
    with pytest.raises(gexc.NotFound):
        await run.get_service(name=NAME, retry=None)
    with quiet.plumbing.lock:
        assert NAME not in quiet.run.revisions
        assert quiet.run.live_instances(NAME) == []
        assert quiet.run.instances  # their lines stay in Cloud Logging
