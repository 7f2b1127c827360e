"""The scale benchmark still runs (tiny load; timings are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_scale_benchmark_runs_end_to_end(
    busybox_image: str,
    compose_cli: list[str],
) -> None:
    """Tiny load, timings not asserted: keeps benchmarks/docker_compose_scale.py working."""
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "benchmarks/docker_compose_scale.py", "--replicas", "2", "--rounds", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "provider / compose = " in result.stdout
    assert "provider / engine  = " in result.stdout
