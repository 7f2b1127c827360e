"""Container health check: one grpc.health.v1 Check against the server in this container.

The image's HEALTHCHECK runs it (no grpc_health_probe binary can be fetched; grpcio
and its health stubs are already in the image). It reads the server's own settings,
so it follows whatever transport the server was started with:

* plaintext when ``ALPHASWARM_CP_TLS_CERT`` is unset (``ALPHASWARM_CP_INSECURE=true``,
  or a loopback listen address);
* TLS otherwise, trusting ``ALPHASWARM_HEALTHCHECK_CA`` (default: the server's own
  certificate, which works for a self-signed one), checking the name
  ``ALPHASWARM_HEALTHCHECK_SERVER_NAME`` (default ``localhost``), and presenting
  ``ALPHASWARM_HEALTHCHECK_CLIENT_CERT`` / ``_CLIENT_KEY`` when the server wants mTLS.

``ALPHASWARM_HEALTHCHECK_SERVICE`` picks the health entry (default ``""``: the server
as a whole; a provider alias follows that provider's credential probe). Exit 0 when
SERVING, 1 otherwise, with one line on stderr saying why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _target(listen: str) -> str:
    """Where to dial: the listen port on loopback (0.0.0.0 / [::] are not dialable)."""
    port = listen.rsplit(":", 1)[-1]
    return f"127.0.0.1:{port}"


def _channel(env: dict[str, str] | os._Environ[str], target: str) -> grpc.Channel:
    cert = env.get("ALPHASWARM_CP_TLS_CERT")
    if not cert:
        return grpc.insecure_channel(target)
    ca = env.get("ALPHASWARM_HEALTHCHECK_CA") or cert
    client_cert = env.get("ALPHASWARM_HEALTHCHECK_CLIENT_CERT")
    client_key = env.get("ALPHASWARM_HEALTHCHECK_CLIENT_KEY")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(client_key).read_bytes() if client_key else None,
        certificate_chain=Path(client_cert).read_bytes() if client_cert else None,
    )
    name = env.get("ALPHASWARM_HEALTHCHECK_SERVER_NAME") or "localhost"
    return grpc.secure_channel(target, credentials, [("grpc.ssl_target_name_override", name)])


def main() -> int:
    env = os.environ
    target = _target(env.get("ALPHASWARM_CP_LISTEN") or "127.0.0.1:50051")
    service = env.get("ALPHASWARM_HEALTHCHECK_SERVICE", "")
    timeout = float(env.get("ALPHASWARM_HEALTHCHECK_TIMEOUT_SECONDS") or 3)
    try:
        with _channel(env, target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {target} {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: cannot read a TLS file: {exc}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {target} service {service!r} is {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
