"""Retries of failed calls: exponential backoff with full jitter, within the call's deadline.

The model is google api-core's ``Retry``: a call is retried when it failed with a
transient code (UNAVAILABLE; RESOURCE_EXHAUSTED only when the server said when to
come back, with RetryInfo), each wait drawn at random up to a growing ceiling (and
never shorter than the server's RetryInfo delay), and every attempt and wait fits
inside the call's one deadline. Only calls that are safe to repeat are retried:
reads (``idempotency_level = NO_SIDE_EFFECTS`` in the proto) and idempotent
converging calls (``IDEMPOTENT``: start, stop, scale); the others (ApplyConfig)
are not, unless a policy says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pb2

from alphaswarm.provider.v1 import provider_service_pb2 as pb

from .errors import AlphaswarmError

_Options = descriptor_pb2.MethodOptions
SAFE_TO_REPEAT: frozenset[str] = frozenset(
    method.name
    for method in pb.DESCRIPTOR.services_by_name["ProviderService"].methods
    if method.GetOptions().idempotency_level in (_Options.NO_SIDE_EFFECTS, _Options.IDEMPOTENT)
)
"""The RPCs the proto marks as safe to repeat."""


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried; ``RetryPolicy(attempts=1)`` turns retries off."""

    attempts: int = 5
    """Attempts in all, the first included."""
    initial: float = 0.1
    """Ceiling of the first wait, in seconds."""
    maximum: float = 5.0
    """Ceiling of any wait."""
    multiplier: float = 2.0
    methods: frozenset[str] = field(default=SAFE_TO_REPEAT)
    """RPC names that are retried (default: the ones the proto marks safe to repeat)."""

    def wait(self, attempt: int, error: AlphaswarmError) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``; None: give up."""
        if attempt >= self.attempts or not self.retryable(error):
            return None
        ceiling = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        jittered = random.uniform(0, ceiling)
        return max(jittered, error.retry_delay or 0.0)

    @staticmethod
    def retryable(error: AlphaswarmError) -> bool:
        if error.code is grpc.StatusCode.UNAVAILABLE:
            return True
        return error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_delay is not None


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)
