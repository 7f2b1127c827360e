"""Bind the gRPC server's port, refusing one that another process already serves.

gRPC's own bind failure is a bare ``RuntimeError("Failed to bind ...")`` that does not
say why, so an address already in use is detected first with a plain socket bound the
way gRPC binds (SO_REUSEADDR, no SO_REUSEPORT: see ``security.limits.server_options``),
and reported in one line. gRPC's refusal still covers the race between the two binds.
"""

from __future__ import annotations

import errno
import socket

import grpc

IN_USE_HINT = "another process serves it (a second alphaswarm-server?); set ALPHASWARM_CP_LISTEN"


class ListenError(SystemExit):
    """The server cannot serve on its address: exits non-zero with this one-line message."""

    def __init__(self, listen: str, problem: str) -> None:
        super().__init__(f"alphaswarm-server: cannot listen on {listen}: {problem}")


def address_in_use(listen: str) -> bool:
    """True when a socket is already listening on ``listen`` (``host:port``; port 0 never)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return False
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False  # an unresolvable host: gRPC's bind reports it
    for family, kind, proto, _, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC does: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> int:
    """Add the listening port to ``server`` and return it; ``ListenError`` when it cannot."""
    if address_in_use(listen):
        raise ListenError(listen, f"address already in use: {IN_USE_HINT}")
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:  # gRPC >= 1.60 raises instead of returning 0
        raise ListenError(listen, f"{exc}".split(";", 1)[0]) from None
    if port == 0:
        raise ListenError(listen, "gRPC could not bind it")
    return port
