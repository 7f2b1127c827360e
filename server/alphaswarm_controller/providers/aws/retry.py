"""When a failed AWS call is sent again, and how long to wait first.

AWS asks clients to retry throttled and transient failures with capped
exponential backoff and jitter ("Error retries and exponential backoff in AWS",
AWS General Reference; botocore's ``standard`` retry mode does the same). The
provider runs that loop itself instead of botocore's, for two reasons:

* A throttled request was refused before the service acted on it
  (ThrottlingException, HTTP 429), so it is safe to send again whatever it does.
  A 5xx, a dropped connection or a timeout may have reached the service, so only
  an idempotent request is sent again (the caller says which it sends).
  botocore's modes retry both kinds for every operation.
* Every wait and attempt stays inside the call's deadline
  (``remaining_timeout()``): a retry that could not finish in time is not made,
  and the caller gets the error with its RetryInfo instead of a late answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from alphaswarm_core.providers.protocol import (
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProviderError,
)
from alphaswarm_core.providers.reasons import ErrorReason


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    """Attempts in all, the first included (botocore's ``standard`` mode sends 3)."""
    base_seconds: float = 0.1
    cap_seconds: float = 5.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): full jitter over a
        capped exponential, so callers throttled together do not come back together."""
        return random.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2**attempt))


DEFAULT_POLICY = RetryPolicy()


def is_throttled(error: InfrastructureProviderError) -> bool:
    return error.reason == ErrorReason.BACKEND_THROTTLED


def is_retryable(error: InfrastructureProviderError, *, idempotent: bool) -> bool:
    """Whether the request that failed with ``error`` may be sent again."""
    if is_throttled(error):
        return True
    return idempotent and isinstance(error, BackendUnavailableError | BackendTimeoutError)
