"""Bounded waits: poll something until it holds, or fail naming what was awaited.

Every wait in the suite that polls goes through here, so none is unbounded, each fails
the same way (what it waited for, and the last value it saw), and a loaded two-core
machine only makes a wait longer, never a test red before its bound.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


def _truthy(value: object) -> bool:
    return bool(value)


def _failure(what: str, within: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {within:g} s waiting for {what}; last seen: {last!r}")


@overload
async def until(
    probe: Callable[[], Awaitable[T]],
    what: str,
    *,
    holds: Callable[[T], bool] = ...,
    within: float = ...,
    every: float = ...,
) -> T: ...


@overload
async def until(
    probe: Callable[[], T],
    what: str,
    *,
    holds: Callable[[T], bool] = ...,
    within: float = ...,
    every: float = ...,
) -> T: ...


async def until(
    probe: Callable[[], Any],
    what: str,
    *,
    holds: Callable[[Any], bool] = _truthy,
    within: float = 30.0,
    every: float = 0.1,
) -> Any:
    """Call ``probe`` (awaiting what it returns if it is awaitable) every ``every``
    seconds until ``holds`` its value (by default: the value is truthy); return that
    value. AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if holds(value):
            return value
        if time.monotonic() > deadline:
            raise _failure(what, within, value)
        await asyncio.sleep(every)


def until_sync(
    probe: Callable[[], T],
    what: str,
    *,
    holds: Callable[[T], bool] = _truthy,
    within: float = 30.0,
    every: float = 0.1,
) -> T:
    """``until`` for code that is not on an event loop (fixtures, threads)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if holds(value):
            return value
        if time.monotonic() > deadline:
            raise _failure(what, within, value)
        time.sleep(every)
