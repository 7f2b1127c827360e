"""Metrics polling keeps its rate: the nth poll is due at start + n * interval."""

from __future__ import annotations

import pytest

from alphaswarm_core.providers import cadence as cadence_module
from alphaswarm_core.providers.cadence import Cadence


class FakeClock:
    """time.monotonic and asyncio.sleep of the cadence module, on a clock of our own."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(cadence_module.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(cadence_module.asyncio, "sleep", fake.sleep)
    return fake


async def test_a_polls_own_time_does_not_stretch_the_period(clock: FakeClock) -> None:
    cadence = Cadence(1.0)
    polled = []
    for _ in range(5):
        polled.append(clock.now)
        clock.now += 0.3  # the poll takes 0.3 s
        await cadence.wait()
    assert polled == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert clock.slept == [pytest.approx(0.7)] * 5


async def test_a_loop_behind_polls_at_once_and_drops_the_missed_ticks(clock: FakeClock) -> None:
    cadence = Cadence(1.0)
    clock.now += 3.5  # the first poll took 3.5 s: the ticks at 101, 102 and 103 passed
    await cadence.wait()
    assert clock.now == 103.5 and clock.slept == [0], "polls at once, no burst of three"
    clock.now += 0.1
    await cadence.wait()
    assert clock.now == pytest.approx(104.0), "back on the schedule: next tick at 104"


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_an_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="positive interval"):
        Cadence(interval)
