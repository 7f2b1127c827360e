"""The connection to the Docker engine: deadline-bounded calls and error translation.

The provider uses the docker SDK's low-level ``APIClient`` because its calls map
one to one onto Engine API requests: a list is one ``GET /containers/json``, not
a list plus an inspect per container as the high-level client does.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.utils import kwargs_from_env

from alphaswarm_core.call import current_call
from alphaswarm_core.providers.concurrency import DEFAULT_BACKEND_TIMEOUT
from alphaswarm_core.providers.errors import (
    BackendConflictError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.reasons import ErrorReason

ENV_VARS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
DEFAULT_HOST = "unix:///var/run/docker.sock"


class DeadlineAPIClient(docker.APIClient):
    """An ``APIClient`` whose every request ends by the caller's gRPC deadline.

    The SDK takes one timeout per client; the bounded runner copies the request's
    context into its worker thread, so the deadline seen here is that of the RPC that
    issued the call. Some SDK methods pass a timeout of their own,
    and it must not escape the deadline either: ``stop`` sends the client timeout
    plus the stop grace, ``pull``/``push``/``import``/``events`` send ``None`` (no
    timeout at all). So an explicit number is capped by the deadline and ``None``
    becomes the remaining time: no request this client makes is unbounded. Threads
    that serve no call (the stats readers) have no deadline and keep their own.
    """

    def _set_request_timeout(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["timeout"] = bounded_timeout(
            kwargs.get("timeout", self.timeout), default=float(self.timeout)
        )
        return kwargs


#: Polls of the engine's state (a replica's readiness, a removal by another client, a
#: network's endpoints) start this often and back off to at most MAX_POLL_INTERVAL:
#: about 3 inspects a second.
POLL_INTERVAL = 0.1
MAX_POLL_INTERVAL = 0.5

Timeout = float | tuple[float, float] | None

_undoing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "alphaswarm_docker_compose_undoing", default=False
)


def bounded_timeout(requested: Timeout, *, default: float) -> float | tuple[float, float]:
    """``requested`` (a requests timeout; None = none) capped by the call's deadline."""
    left = deadline_left()
    if requested is None:
        return default if left is None else min(default, left)
    if left is None:
        return requested
    if isinstance(requested, tuple):
        return (min(requested[0], left), min(requested[1], left))
    return min(float(requested), left)


def deadline_left() -> float | None:
    """Seconds until the current call's deadline (at least 1 ms); None without one."""
    if _undoing.get():
        return None
    call = current_call.get()
    if call is None or call.deadline is None:
        return None
    return max(0.001, call.deadline - time.monotonic())


def remaining(default: float) -> float:
    """Seconds a blocking wait may take: ``default``, capped by the call's deadline
    (unless undoing)."""
    left = deadline_left()
    return default if left is None else min(default, left)


def polls(timeout: float) -> Iterator[int]:
    """Yield before each poll, sleeping between polls with a capped backoff, until
    ``timeout`` seconds have passed (at least one poll, and one at the very end)."""
    deadline = time.monotonic() + timeout
    interval = POLL_INTERVAL
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(interval, left))
        interval = min(MAX_POLL_INTERVAL, interval * 1.5)


@contextlib.contextmanager
def undoing() -> Iterator[None]:
    """Requests made inside are not cut by the call's deadline, only by the client's own
    timeout: a call that failed (perhaps because its time ran out) must still be able
    to remove what it created rather than leave half its changes behind."""
    token = _undoing.set(True)
    try:
        yield
    finally:
        _undoing.reset(token)


def engine_address(env: Mapping[str, str]) -> str:
    return env.get("DOCKER_HOST") or DEFAULT_HOST


def where(env: Mapping[str, str]) -> str:
    """How to reach the engine, for messages: DOCKER_HOST and TLS settings (no secrets)."""
    parts = [f"DOCKER_HOST={engine_address(env)}"]
    if env.get("DOCKER_TLS_VERIFY"):
        parts.append(f"DOCKER_TLS_VERIFY={env['DOCKER_TLS_VERIFY']}")
    if env.get("DOCKER_CERT_PATH"):
        parts.append(f"DOCKER_CERT_PATH={env['DOCKER_CERT_PATH']}")
    return ", ".join(parts)


def check_tls_settings(env: Mapping[str, str]) -> None:
    """Fail early, naming the variable, when TLS is asked for but its files are missing."""
    if not env.get("DOCKER_TLS_VERIFY"):
        return
    cert_path = env.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")
    missing = [
        name
        for name in ("ca.pem", "cert.pem", "key.pem")
        if not os.path.isfile(os.path.join(cert_path, name))
    ]
    if missing:
        raise InfrastructureProviderUnavailable(
            f"DOCKER_TLS_VERIFY is set but DOCKER_CERT_PATH ({cert_path}) lacks "
            f"{', '.join(missing)}; set DOCKER_CERT_PATH to the directory holding the "
            "engine's client certificates, or unset DOCKER_TLS_VERIFY",
            reason=ErrorReason.CREDENTIALS_MISSING,
            metadata={"env": ",".join(ENV_VARS), "missing": ",".join(missing)},
        )


def connect(env: Mapping[str, str], *, timeout: float, max_pool_size: int) -> DeadlineAPIClient:
    """A client for the engine named by DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH.

    Negotiates the API version with the engine, so it talks to it once (blocking).
    """
    check_tls_settings(env)
    try:
        kwargs = kwargs_from_env(environment=dict(env))
        return DeadlineAPIClient(
            version="auto",
            timeout=math.ceil(timeout),
            max_pool_size=max_pool_size,
            **kwargs,
        )
    except Exception as exc:
        raise unreachable(env, exc) from exc


def unreachable(env: Mapping[str, str], exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"cannot reach the Docker engine at {where(env)}: {_short(exc)}; start the engine or "
        "point DOCKER_HOST (and DOCKER_TLS_VERIFY / DOCKER_CERT_PATH for TLS) at it",
        metadata={
            "cause": "DOCKER_ENGINE_UNREACHABLE",
            "env": ",".join(ENV_VARS),
            "docker_host": engine_address(env),
        },
    )


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text if len(text) <= 300 else text[:297] + "..."


_PORT_TAKEN = ("port is already allocated", "address already in use")
_CANNOT_RUN = ("OCI runtime", "executable file not found", "exec format error")


def translate(
    exc: BaseException, env: Mapping[str, str], *, what: str
) -> InfrastructureProviderError:
    """The provider error for an SDK/transport exception raised while doing ``what``."""
    if isinstance(exc, InfrastructureProviderError):
        return exc
    if isinstance(exc, requests.exceptions.Timeout):
        return BackendTimeoutError(
            f"the Docker engine at {where(env)} did not answer in time while {what}"
        )
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return unreachable(env, exc)
    if isinstance(exc, docker.errors.APIError):
        detail = _short(exc)
        status = exc.status_code or 0
        if any(marker in detail for marker in _PORT_TAKEN):
            return BackendRejectedError(
                f"{what}: a published host port is already in use ({detail})",
                metadata={"cause": "PORT_IN_USE"},
            )
        if any(marker in detail for marker in _CANNOT_RUN):
            return BackendRejectedError(
                f"{what}: the container cannot run ({detail})",
                metadata={"cause": "CONTAINER_START_FAILED"},
            )
        if status == 404:
            return ResourceNotFoundError(f"{what}: {detail}")
        if status == 409:
            return BackendConflictError(f"{what}: {detail}")
        if status == 400:
            return BackendRejectedError(f"{what}: the engine rejected the request ({detail})")
        if status in (502, 503, 504):
            return BackendUnavailableError(f"{what}: the Docker engine is unavailable ({detail})")
        return InfrastructureProviderError(f"{what}: the Docker engine failed ({detail})")
    if isinstance(exc, docker.errors.DockerException):
        return unreachable(env, exc)
    return InfrastructureProviderError(f"{what}: unexpected failure ({type(exc).__name__})")


__all__ = [
    "DEFAULT_BACKEND_TIMEOUT",
    "ENV_VARS",
    "MAX_POLL_INTERVAL",
    "POLL_INTERVAL",
    "DeadlineAPIClient",
    "bounded_timeout",
    "connect",
    "deadline_left",
    "engine_address",
    "polls",
    "remaining",
    "translate",
    "undoing",
    "unreachable",
    "where",
]
