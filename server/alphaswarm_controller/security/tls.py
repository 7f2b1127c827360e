"""Server transport credentials: TLS, mTLS, or plaintext only where that is safe."""

from __future__ import annotations

import ipaddress

import grpc

from alphaswarm_controller.settings import ServerSettings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS (mTLS when a client CA is set) credentials, or None for plaintext.

    Plaintext on a non-loopback address is refused unless ALPHASWARM_CP_INSECURE
    says a proxy in front terminates TLS: an unauthenticated control plane on
    the network is the worst bug this service could have.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_cert or settings.tls_key:
            raise SystemExit("set both ALPHASWARM_CP_TLS_CERT and ALPHASWARM_CP_TLS_KEY")
        if settings.tls_client_ca:
            raise SystemExit("ALPHASWARM_CP_TLS_CLIENT_CA needs ALPHASWARM_CP_TLS_CERT/_KEY")
        if not is_loopback(settings.listen_host) and not settings.insecure:
            raise SystemExit(
                f"refusing to serve plaintext on {settings.listen}: set ALPHASWARM_CP_TLS_CERT "
                "and ALPHASWARM_CP_TLS_KEY, or ALPHASWARM_CP_INSECURE=true behind a TLS proxy"
            )
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
