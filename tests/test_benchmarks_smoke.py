"""The benchmark suite runs end to end (tiny loads; its timings are not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the project root, as a user runs a benchmark."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_benchmark_smoke_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _run("benchmarks", "--smoke", "--json", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 15
    assert set(report["backend_calls"]) == {"local", "docker_compose"}
    polls = next(r for r in report["rows"] if "subscribers on 1 service" in r["figure"])
    # Counting, not timing: 50 subscribers of one service share one backend stream.
    assert polls["value"] < 0.5 * polls["baseline"]
    measured = [r for r in report["rows"] if "backend calls" not in r["figure"]]
    assert all(row["value"] > 0 for row in measured)
    followed = next(r for r in report["rows"] if r["figure"].startswith("StreamLogs follower"))
    assert followed["met"], "the follower got every line, in order"
    calls = report["backend_calls"]
    assert calls["local"]["GetDeploymentStatus"] == 0, "local serves status from memory"
    lists = [v for k, v in calls["docker_compose"].items() if k.startswith("ListDeployments")]
    assert lists[0] == lists[1], "listing costs the same whatever the number of services"


def test_load_smoke_has_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    result = _run(
        "benchmarks.load",
        *("--seconds", "6", "--clients", "4", "--streams", "5", "--json", str(out)),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["errors"] == {} and report["calls"] > 0 and report["stream_messages"] > 0


def test_unary_breakdown_smoke_measures_every_variant() -> None:
    from benchmarks.unary_breakdown import STEPS

    result = _run(
        "benchmarks.unary_breakdown",
        *("--seconds", "1", "--rounds", "1", "--concurrency", "2"),
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *table, last = result.stdout.strip().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert set(rows) == {"bare", *STEPS, "full"}
    assert all(float(row[0]) > 0 for row in rows.values()), "every variant served calls"
    # The handler measured the calls it served, so its figure is a number, not nan.
    in_handler = float(last.split(" us inside")[0].rsplit(" ", 1)[1])
    assert in_handler > 0, last
