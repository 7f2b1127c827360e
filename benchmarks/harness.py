"""Process and measurement helpers shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServerUnderTest:
    process: subprocess.Popen[str]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


@contextmanager
def server(kind: str, *, services: int = 1) -> Iterator[ServerUnderTest]:
    """Run ``benchmarks.servers <kind>`` in its own process until the block ends."""
    with tempfile.TemporaryDirectory() as state:
        args = ["benchmarks.servers", kind, "--services", str(services), "--state-dir", state]
        with server_process(args, kind) as started:
            yield started


@contextmanager
def server_process(module_args: list[str], name: str) -> Iterator[ServerUnderTest]:
    """Run ``python -m <module_args>`` until the block ends; it prints ``PORT <n>`` first."""
    process = subprocess.Popen(
        [sys.executable, "-m", *module_args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"{name} server did not start: {line!r}")
    try:
        yield ServerUnderTest(process, int(line.split()[1]))
    finally:
        process.terminate()
        process.wait(15)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def now() -> float:
    return time.perf_counter()
