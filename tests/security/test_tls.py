"""TLS and mTLS: the handshake decides who may talk at all."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_controller.security.devcerts import DevCerts
from alphaswarm_controller.security.tls import is_loopback, server_credentials
from alphaswarm_controller.settings import ServerSettings
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
