"""The call being served: what the server resolved about it, once, in its outermost layer.

The gRPC layers build one ``CallContext`` per call and publish it in ``current_call``
for everything that runs on the call's behalf: the inner layers (authorization,
audit), the servicer, providers (``concurrency.remaining_timeout`` reads the
deadline) and every log line (the request id). Nothing else carries per-call state.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, replace

from alphaswarm_core.providers.models import NO_CHANGE_REQUEST, ChangeRequest


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, as authentication established it."""

    name: str
    role: int
    """An ``alphaswarm.provider.v1.Role`` number: 1 viewer, 2 operator, 3 admin."""
    namespaces: frozenset[str] | None = None
    """The namespaces the caller may address; None = every one."""
    providers: frozenset[str] | None = None
    """The provider aliases the caller may use; None = every one."""


ANONYMOUS = Caller("anonymous", 3)
"""Who calls when authentication is off: everything is allowed."""


@dataclass(slots=True)
class CallContext:
    """One RPC as the server understood it. Fields are filled as layers resolve them:
    the request id, method and peer at once; the caller after authentication; alias,
    namespace and service after the request was validated."""

    method: str
    """The RPC's name, e.g. ``StartDeployment``."""
    request_id: str
    peer: str
    deadline: float | None = None
    """Monotonic time by which backend work must end (the caller's deadline capped by the
    server's call budget); None for no deadline."""
    alias: str = ""
    """The provider alias serving the call (the default one applied); "" when none."""
    namespace: str = ""
    """The namespace the call addresses ("default" applied); "" = every namespace."""
    service_id: str = ""
    caller: Caller = ANONYMOUS
    caller_gone: bool = False
    """The caller cancelled (or its deadline passed) while the server went on."""
    change: ChangeRequest = NO_CHANGE_REQUEST
    """A mutating call's expected_revision and change_cause (providers with revisions read
    them through ``current_change()``)."""


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "alphaswarm_call", default=None
)


def current_change() -> ChangeRequest:
    """The expected revision and change cause of the change being made (none outside a call)."""
    call = current_call.get()
    return NO_CHANGE_REQUEST if call is None else call.change


@contextlib.contextmanager
def making_change(change: ChangeRequest) -> Iterator[None]:
    """Run a provider's mutating methods with ``change`` as ``current_change()``: what the
    server does for each call, for code that drives a provider directly (tests, tools)."""
    call = current_call.get()
    changed = CallContext("library", "", "") if call is None else replace(call)
    changed.change = change
    token = current_call.set(changed)
    try:
        yield
    finally:
        current_call.reset(token)
