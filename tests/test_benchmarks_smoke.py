"""The benchmark suite runs end to end (tiny loads; its timings are not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    figures = {row["figure"].split(",")[0]: row for row in report["rows"]}
    assert len(report["rows"]) == 9
    polls = figures["backend polls per interval"]
    # Counting, not timing: 50 subscribers of one service share one backend stream.
    assert polls["value"] < 0.5 * polls["baseline"]
    assert all(row["value"] > 0 for row in report["rows"])
