"""A fixed-rate schedule for polling loops (metrics streams).

Sleeping the interval after each poll stretches the period by the poll's own time
and by the event loop's lag: 100 services streamed at 1 s were polled 0.85 times a
second each on a busy server, and every subscriber got 15 % fewer samples than it
asked for. With a cadence the nth poll is due at ``start + n * interval`` whatever
the polls cost. A loop that has fallen a whole interval behind polls at once and
drops the ticks it missed rather than bursting to catch up, as Go's
``time.Ticker`` does: the rate stays at most one poll per interval on average.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable


class Cadence:
    """``await cadence.wait()`` between polls: returns when the next one is due."""

    def __init__(
        self,
        interval_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not interval_seconds > 0:
            raise ValueError("a cadence needs a positive interval")
        self.interval = interval_seconds
        self._clock = clock
        self._sleep = sleep
        self._next = clock() + interval_seconds

    async def wait(self) -> None:
        now = self._clock()
        if self._next <= now:  # behind by a whole interval or more: poll now, skip the missed
            self._next += (math.floor((now - self._next) / self.interval) + 1) * self.interval
            await self._sleep(0)
            return
        delay = self._next - now
        self._next += self.interval
        await self._sleep(delay)
