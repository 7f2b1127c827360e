"""Errors about huge or hostile inputs stay small on the wire, and keep their real code.

Statuses travel in HTTP/2 trailers, and grpc clients refuse trailers above 8 KiB
(soft limit: rejected at random up to the 16 KiB hard one) with RESOURCE_EXHAUSTED
"Stream removed". A 100 KB ``provider`` used to be echoed in ErrorInfo until the
caller got that instead of NOT_FOUND; forty 70-character Unicode env keys made a
5 KB percent-encoded message plus 8 KB of details.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.errors import MAX_DETAILS_BYTES, MAX_MESSAGE_WIRE_BYTES
from tests.service.conftest import Harness
from tests.service.rich_status import Details, details

CLIENT_METADATA_SOFT_LIMIT = 8 * 1024


def percent_encoded_length(text: str) -> int:
    """Length of ``text`` as grpc-message travels (gRPC over HTTP/2, Percent-Encoded)."""
    return sum(1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3 for byte in text.encode("utf-8"))


def trailer_bytes(error: grpc.aio.AioRpcError) -> int:
    """What the status costs in the trailers: header names, values as sent, HPACK's 32
    bytes of overhead per entry (RFC 7541 section 4.1)."""
    size = len("grpc-status") + 2 + 32
    size += len("grpc-message") + percent_encoded_length(error.details() or "") + 32
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        sent = len(base64.b64encode(value)) if isinstance(value, bytes) else len(value)
        size += len(key) + sent + 32
    return size


async def refused(call: Awaitable[Any]) -> tuple[Details, grpc.aio.AioRpcError]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return details(caught.value), caught.value


def spec(**fields: Any) -> types.DeploymentSpec:
    return types.DeploymentSpec(**{"service_id": "web", "command": ["sleep", "1"], **fields})


HUGE = "x" * 100_000
WIDE = "\u20ac" * 5000  # 3 UTF-8 bytes each, 9 once percent-encoded


@pytest.mark.parametrize("alias", [HUGE, WIDE, "memory\n" + HUGE])
async def test_a_malformed_huge_provider_is_invalid_with_small_trailers(
    harness: Harness, alias: str
) -> None:
    """An alias is validated before anything uses or logs it: never echoed in full."""
    found, error = await refused(
        harness.stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(provider=alias, service_id="web")
        )
    )
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT, found.message
    assert found.error_info is not None and "provider" not in found.error_info.metadata
    assert found.fields == ["provider"]
    assert alias[:100] not in found.message
    assert trailer_bytes(error) < CLIENT_METADATA_SOFT_LIMIT


async def test_a_well_formed_unknown_provider_is_not_found(harness: Harness) -> None:
    long_alias = "p" + "x" * 62
    found, error = await refused(
        harness.stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(provider=long_alias, service_id="web")
        )
    )
    assert found.code is grpc.StatusCode.NOT_FOUND, found.message
    assert found.error_info is not None and found.error_info.reason == "PROVIDER_NOT_FOUND"
    assert all(len(v.encode()) <= 256 for v in found.error_info.metadata.values())
    assert trailer_bytes(error) < CLIENT_METADATA_SOFT_LIMIT


async def test_many_wide_violations_fit_and_say_how_many_were_left_out(harness: Harness) -> None:
    env = {"\u20ac" * 70 + str(index): "v" for index in range(40)}
    found, error = await refused(
        harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec(env=env)))
    )
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert found.fields and all(field.startswith("spec.env[") for field in found.fields)
    assert found.error_info is not None
    omitted = int(found.error_info.metadata["omitted_violations"])
    assert omitted > 0 and len(found.fields) + omitted == 40
    assert percent_encoded_length(found.message) <= MAX_MESSAGE_WIRE_BYTES
    trailers: Any = error.trailing_metadata() or ()
    raw = dict(trailers)["grpc-status-details-bin"]
    assert len(raw) <= MAX_DETAILS_BYTES
    assert trailer_bytes(error) < CLIENT_METADATA_SOFT_LIMIT


@pytest.mark.parametrize(
    "hostile",
    [
        spec(service_id=HUGE),
        spec(service_id=WIDE),
        spec(labels={WIDE[:300] + str(i): "v" for i in range(60)}),
        spec(provider_options={HUGE[:128] + "\n" + str(i): "v" for i in range(64)}),
        spec(resources=types.Resources(cpu=WIDE, memory=HUGE)),
        spec(env={"K" + str(i): WIDE * 8 for i in range(10)}),
    ],
)
async def test_hostile_specs_are_invalid_argument_with_small_trailers(
    harness: Harness, hostile: types.DeploymentSpec
) -> None:
    found, error = await refused(
        harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=hostile))
    )
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT, found.message
    assert found.fields
    assert trailer_bytes(error) < CLIENT_METADATA_SOFT_LIMIT


async def test_unknown_deployment_resource_info_is_clipped(harness: Harness) -> None:
    found, error = await refused(
        harness.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="a" * 63))
    )
    assert found.code is grpc.StatusCode.NOT_FOUND
    assert found.resource_info is not None
    assert found.resource_info.resource_name == "default/" + "a" * 63
    assert trailer_bytes(error) < CLIENT_METADATA_SOFT_LIMIT


async def test_huge_values_are_clipped_in_the_log_and_audit(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = pb.StartDeploymentRequest(provider=HUGE, spec=spec(namespace=HUGE[:5000]))
    await refused(harness.stub.StartDeployment(request))
    assert caplog.records
    for record in caplog.records:
        assert len(record.getMessage()) < 4096, record.name
    audit = [r for r in caplog.records if r.name == "alphaswarm.audit"]
    assert len(audit) == 1 and "x" * 300 not in audit[0].getMessage()
