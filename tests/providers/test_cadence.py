"""Metrics polling keeps its rate: the nth poll is due at start + n * interval."""

from __future__ import annotations

import pytest

from alphaswarm_core.providers.cadence import Cadence


class FakeClock:
    """A monotonic clock and a sleep that only advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def cadence(clock: FakeClock) -> Cadence:
    return Cadence(1.0, clock=clock.monotonic, sleep=clock.sleep)


async def test_a_polls_own_time_does_not_stretch_the_period(clock: FakeClock) -> None:
    every = cadence(clock)
    polled = []
    for _ in range(5):
        polled.append(clock.now)
        clock.now += 0.3  # the poll takes 0.3 s
        await every.wait()
    assert polled == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert clock.slept == [pytest.approx(0.7)] * 5


async def test_a_loop_behind_polls_at_once_and_drops_the_missed_ticks(clock: FakeClock) -> None:
    every = cadence(clock)
    clock.now += 3.5  # the first poll took 3.5 s: the ticks at 101, 102 and 103 passed
    await every.wait()
    assert clock.now == 103.5 and clock.slept == [0], "polls at once, no burst of three"
    clock.now += 0.1
    await every.wait()
    assert clock.now == pytest.approx(104.0), "back on the schedule: next tick at 104"


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_an_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="positive interval"):
        Cadence(interval)
