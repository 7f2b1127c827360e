"""x-request-id: in the trailers of every call (success, error, stream) and in the headers
of streams; the caller's own when sane; in every log line written while serving the call."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm_controller.observability.logs import (
    RequestIdFilter,
    accept_request_id,
    configure_logging,
)
from alphaswarm_core.call import CallContext, current_call
from tests.observability.conftest import ServeFactory, spec
from tests.waiting import until


def header(metadata: object) -> str:
    found = [value for key, value in metadata or () if key == "x-request-id"]  # type: ignore[attr-defined]
    assert len(found) == 1, metadata
    return str(found[0])


def keys(metadata: Any) -> list[str]:
    return [str(key) for key, _ in metadata or ()]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything the server logs, through the real JSON set-up (restored afterwards)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


async def test_every_call_gets_an_id_in_its_metadata(serve: ServeFactory) -> None:
    served = await serve()
    ok = served.stub.ListProviders(pb.ListProvidersRequest())
    await ok
    generated = header(await ok.trailing_metadata())
    assert len(generated) == 32 and int(generated, 16) >= 0

    mine = served.stub.ListProviders(
        pb.ListProvidersRequest(), metadata=(("x-request-id", "caller-7f3a:try=2"),)
    )
    await mine
    assert header(await mine.trailing_metadata()) == "caller-7f3a:try=2"

    insane = served.stub.ListProviders(
        pb.ListProvidersRequest(), metadata=(("x-request-id", 'x" injected=1'),)
    )
    await insane
    replaced = header(await insane.trailing_metadata())
    assert replaced != 'x" injected=1' and len(replaced) == 32

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.stub.StopDeployment(pb.StopDeploymentRequest(service_id="nope"))
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND
    trailers = failed.value.trailing_metadata()
    assert len(header(trailers)) == 32
    # The error mapping's rich status travels beside it.
    assert "grpc-status-details-bin" in keys(trailers)

    await served.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api")))
    request = pb.StreamMetricsRequest(service_id="api")
    request.interval.FromMilliseconds(100)
    stream = served.stub.StreamMetrics(request, metadata=(("x-request-id", "watch-1"),))
    assert header(await stream.initial_metadata()) == "watch-1"  # at once, in the headers
    stream.cancel()

    missing = served.stub.StreamMetrics(
        pb.StreamMetricsRequest(service_id="nope"), metadata=(("x-request-id", "watch-2"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in missing:
            pass
    assert ended.value.code() is grpc.StatusCode.NOT_FOUND
    assert header(ended.value.initial_metadata()) == "watch-2"
    assert header(ended.value.trailing_metadata()) == "watch-2"


async def test_log_lines_of_a_call_carry_its_id(serve: ServeFactory, captured: io.StringIO) -> None:
    served = await serve()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.stub.StopDeployment(
            pb.StopDeploymentRequest(service_id="nope"), metadata=(("x-request-id", "r-1"),)
        )
    assert header(failed.value.trailing_metadata()) == "r-1"
    await served.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api")))

    # The access line is written once the failed call's status went out (grpc aio's abort
    # sends it first): wait for it, bounded.
    def logged() -> list[dict[str, Any]]:
        return [json.loads(line) for line in captured.getvalue().splitlines()]

    lines = await until(
        logged,
        "the failed call's access line",
        holds=lambda found: any(
            line.get("request_id") == "r-1" and line["logger"] == "alphaswarm.access"
            for line in found
        ),
        within=10,
        every=0.05,
    )
    of_call = [line for line in lines if line.get("request_id") == "r-1"]
    loggers = {line["logger"] for line in of_call}
    # error mapping, audit (an operator call) and the access line: all carry the id.
    assert {"alphaswarm_controller.errors", "alphaswarm.audit", "alphaswarm.access"} <= loggers
    (audit,) = [line for line in of_call if line["logger"] == "alphaswarm.audit"]
    assert (audit["rpc"], audit["outcome"], audit["service"]) == (
        "StopDeployment",
        "NOT_FOUND",
        "nope",
    )
    # Another call, another id; lines outside calls have none.
    starts = [line for line in lines if line.get("rpc") == "StartDeployment"]
    assert starts and starts[0]["request_id"] not in ("", "r-1")
    assert any("request_id" not in line for line in lines)  # e.g. "listening on"
    assert current_call.get() is None


def test_text_format_tags_lines_of_a_call() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(name)s%(request_tag)s: %(message)s"))
    logger = logging.getLogger("tests.observability.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        token = current_call.set(CallContext("GetDeploymentStatus", "abc", ""))
        logger.warning("inside")
        current_call.reset(token)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "tests.observability.text: outside",
        "tests.observability.text [abc]: inside",
    ]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("Root=1-5759e988-bd862e3fe1be46a994272793", True),
        (b"bytes-id", True),
        ("", False),
        (None, False),
        ("two words", False),
        ("line\nbreak", False),
        ("x" * 129, False),
    ],
)
def test_accept_request_id(sent: str | bytes | None, kept: bool) -> None:
    accepted = accept_request_id(sent)
    if kept:
        assert accepted == (sent.decode() if isinstance(sent, bytes) else sent)
    else:
        assert len(accepted) == 32 and accepted != sent
