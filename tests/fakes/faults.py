"""One fault-injection interface for every emulator (and proxy) the tests run.

Each emulator owns a ``Faults`` plan and consults it once per request, before it
serves the operation: ``faults.take(operation, path)`` returns the ``Fault`` to
answer with, or None. An emulator turns a fault into its service's wire form
(an AWS error code in a 400, an ARM error body with Retry-After, a gRPC status, a
Kubernetes ``Status`` object), so a test says *what* goes wrong, in the service's
own words where it matters (``code``), and never *how* a given emulator spells it.

Operations are named the way each service's documentation names them
(``ecs:CreateService``, ``ssm:PutParameter``, ``run:CreateService``,
``arm:PUT containerGroups``, ``kube:GET deployments``); ``"*"`` matches every one.

``Kind`` covers the failure modes every provider must survive; ``Faults.background``
switches one on for a share of all requests, so a whole provider suite can run
under throttling, 5xx or conflicts and must still pass, with bounded request counts.
"""

from __future__ import annotations

import enum
import itertools
import re
import threading
from collections import Counter
from dataclasses import dataclass, field


class Kind(enum.StrEnum):
    """A failure mode, mapped by each emulator to its service's documented response."""

    THROTTLED = "throttled"
    """The service's rate limiting (429 / ThrottlingException / RESOURCE_EXHAUSTED)."""
    UNAVAILABLE = "unavailable"
    """A transient server error (500/503 / UNAVAILABLE)."""
    CONFLICT = "conflict"
    """A concurrent writer or a resource in a transitional state (409 / 412 / ABORTED)."""
    GONE = "gone"
    """A resource version older than the service keeps (Kubernetes' 410 Gone)."""
    DENIED = "denied"
    """The caller's credentials lack a permission (403 / AccessDenied / PERMISSION_DENIED)."""


@dataclass
class Fault:
    operation: str
    kind: Kind
    code: str = ""
    """The service's own error code, when a test needs a specific one."""
    message: str = "injected fault"
    times: int = 1
    """How many matching requests fail; 0 = until cleared."""
    retry_after: float | None = None
    match: str = ""
    """A regular expression the request path must contain (searched), "" = any."""

    def matches(self, operation: str, path: str) -> bool:
        if self.operation not in ("*", operation):
            return False
        return not self.match or re.search(self.match, path) is not None


@dataclass
class Faults:
    """The fault plan of one emulator: injected faults, background faults, and a count of
    every request seen per operation (for bounded-request-count assertions)."""

    _planned: list[Fault] = field(default_factory=list)
    _background: dict[Kind, int] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tick: itertools.count[int] = field(default_factory=itertools.count)

    def inject(
        self,
        operation: str,
        kind: Kind,
        *,
        code: str = "",
        message: str = "injected fault",
        times: int = 1,
        retry_after: float | None = None,
        match: str = "",
    ) -> Fault:
        """Fail the next ``times`` requests of ``operation`` (whose path matches ``match``)."""
        fault = Fault(operation, kind, code, message, times, retry_after, match)
        with self._lock:
            self._planned.append(fault)
        return fault

    def background(self, kind: Kind, every: int) -> None:
        """Fail one request in ``every`` (deterministically: every ``every``-th), any operation."""
        if every < 2:
            raise ValueError("a background fault on every request would never let one through")
        with self._lock:
            self._background[kind] = every

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()
            self._background.clear()

    def take(self, operation: str, path: str = "") -> Fault | None:
        """Count the request; the fault to answer it with, or None to serve it."""
        with self._lock:
            self.seen[operation] += 1
            fault = self._take_planned(operation, path) or self._take_background(operation)
            if fault is not None:
                self.failed[operation] += 1
            return fault

    def _take_planned(self, operation: str, path: str) -> Fault | None:
        for fault in self._planned:
            if fault.matches(operation, path):
                if fault.times == 1:
                    self._planned.remove(fault)
                elif fault.times > 1:
                    fault.times -= 1
                return fault
        return None

    def _take_background(self, operation: str) -> Fault | None:
        if not self._background:
            return None
        tick = next(self._tick)
        for kind, every in self._background.items():
            if tick % every == every - 1:
                return Fault(operation, kind, message=f"background {kind} fault", retry_after=0.2)
        return None

    def count(self, operation: str = "*") -> int:
        """Requests seen for ``operation`` ("*" = all)."""
        with self._lock:
            return sum(self.seen.values()) if operation == "*" else self.seen[operation]
