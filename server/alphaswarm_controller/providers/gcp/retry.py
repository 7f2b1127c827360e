"""One retry policy for every Google API call: transient errors only, bounded in count and time.

AIP-194 (https://google.aip.dev/194): UNAVAILABLE means the request was not processed and
is safe to retry for any method. RESOURCE_EXHAUSTED is retried only when it is a rate
limit (ErrorInfo reason ``RATE_LIMIT_EXCEEDED``, google/api/error_reason.proto: a
per-minute quota that clears by itself); ``RESOURCE_QUOTA_EXCEEDED`` (too many services,
say) does not clear by waiting and is reported at once. Delays are api_core's truncated
exponential backoff with full jitter (0.25 s doubling up to 4 s); a call makes at most
``MAX_ATTEMPTS`` requests and never waits past the caller's deadline.

The generated clients' own per-method defaults differ per API (and some retry nothing),
so every call passes ``retry=policy()`` explicitly.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.api_core.retry import AsyncRetry

from alphaswarm_core.providers.concurrency import remaining_timeout

MAX_ATTEMPTS = 5
INITIAL_DELAY = 0.25
MAX_DELAY = 4.0
QUOTA_EXCEEDED = "RESOURCE_QUOTA_EXCEEDED"


def is_rate_limit(exc: BaseException) -> bool:
    return isinstance(exc, gexc.ResourceExhausted | gexc.TooManyRequests) and (
        getattr(exc, "reason", None) != QUOTA_EXCEEDED
    )


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, gexc.ServiceUnavailable) or is_rate_limit(exc)


def policy(cap: float | None = None) -> AsyncRetry:
    """A fresh policy for one call (the attempt count is per call)."""
    attempts = 0

    def give_up_after_max_attempts(exc: Exception) -> None:
        nonlocal attempts
        attempts += 1
        if attempts >= MAX_ATTEMPTS:
            raise exc

    return AsyncRetry(
        predicate=is_transient,
        initial=INITIAL_DELAY,
        maximum=MAX_DELAY,
        multiplier=2.0,
        timeout=remaining_timeout() if cap is None else remaining_timeout(cap),
        on_error=give_up_after_max_attempts,
    )
