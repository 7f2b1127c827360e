"""TLS and mTLS: the handshake decides who may talk at all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_controller.security.devcerts import DevCerts, make_dev_certs
from alphaswarm_controller.security.tls import is_loopback, server_credentials
from alphaswarm_controller.settings import ServerSettings
from alphaswarm_core.providers.models import DeploymentSpec
from tests.security.conftest import ServerFactory
from tests.service.conftest import settings


async def list_providers(channel: grpc.aio.Channel) -> pb.ListProvidersResponse:
    stub = pb_grpc.ProviderServiceStub(channel)
    return await stub.ListProviders(pb.ListProvidersRequest(), timeout=5)


async def test_tls_server_serves_clients_that_trust_its_ca(
    make_server: ServerFactory, certs: DevCerts
) -> None:
    running = await make_server(tls_cert=certs.server_cert, tls_key=certs.server_key)
    trusted = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{running.port}", trusted) as channel:
        assert (await list_providers(channel)).default_provider == "memory"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_providers(channel)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_clients_without_a_certificate(
    make_server: ServerFactory, certs: DevCerts
) -> None:
    running = await make_server(
        tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    )
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key.read_bytes(),
        certificate_chain=certs.client_cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(f"localhost:{running.port}", with_cert) as channel:
        assert (await list_providers(channel)).providers
    without = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{running.port}", without) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_providers(channel)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("controller.internal", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_plaintext_only_on_loopback_or_when_explicit(tmp_path: object) -> None:
    base: ServerSettings = settings(tmp_path)  # type: ignore[arg-type]
    assert server_credentials(base) is None
    public = dataclasses.replace(base, listen="0.0.0.0:50051")
    with pytest.raises(SystemExit, match="refusing to serve plaintext"):
        server_credentials(public)
    assert server_credentials(dataclasses.replace(public, insecure=True)) is None


def test_half_configured_tls_is_refused(tmp_path: object, certs: DevCerts) -> None:
    base: ServerSettings = settings(tmp_path)  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="both"):
        server_credentials(dataclasses.replace(base, tls_cert=certs.server_cert))


async def test_mtls_refuses_a_client_certificate_from_another_ca(
    make_server: ServerFactory, certs: DevCerts, tmp_path: Path
) -> None:
    running = await make_server(
        tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca
    )
    stranger = make_dev_certs(tmp_path / "other-ca", client_name="stranger")
    foreign = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),  # trusts the server: only the client is foreign
        private_key=stranger.client_key.read_bytes(),
        certificate_chain=stranger.client_cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(f"localhost:{running.port}", foreign) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_providers(channel)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_keepalive_pings_without_calls_are_refused(make_server: ServerFactory) -> None:
    """A client that pings an idle connection far more often than the server allows
    (grpc.http2.min_recv_ping_interval_without_data_ms) is sent away (GOAWAY
    too_many_pings) after the allowed strikes: its open stream ends UNAVAILABLE."""
    running = await make_server()
    memory = await running.pool.get("memory")
    await memory.start(DeploymentSpec("web", command=("sleep", "1")))
    options = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        # A watch of a service that does not change sends nothing after its first message.
        watch = stub.WatchDeployment(pb.WatchDeploymentRequest(service_id="web"), timeout=60)
        await watch.read()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watch.read()
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        said = f"{caught.value.details()} {caught.value.debug_error_string()}".lower()
        assert "too_many_pings" in said or "too many pings" in said, said
