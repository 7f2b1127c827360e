"""A benchmark run's rows, their text form, and the README's copy of it.

``python -m benchmarks`` prints ``text(report)`` and writes the report as JSON.
The README's performance table is that same text, between ``BEGIN`` and ``END``:
``python -m benchmarks --readme README.md`` writes it after a run, and
``python -m benchmarks.report [--json FILE] [--readme README.md]`` from an earlier
run's JSON (default benchmarks/results/latest.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN = "<!-- benchmarks: begin (python -m benchmarks.report writes this block) -->"
END = "<!-- benchmarks: end -->"
LATEST = Path(__file__).parent / "results" / "latest.json"


@dataclass
class Row:
    figure: str
    value: float
    baseline: float
    unit: str
    target: str
    met: bool

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def render_calls(tables: dict[str, dict[str, int]]) -> str:
    names = list(next(iter(tables.values()))) if tables else []
    width = max((len(n) for n in names), default=0)
    lines = ["backend calls per RPC: " + "  ".join(tables)]
    lines += [
        f"  {name.ljust(width)}  "
        + "  ".join(str(t[name]).rjust(len(a)) for a, t in tables.items())
        for name in names
    ]
    return "\n".join(lines)


def render(rows: list[Row]) -> str:
    header = ("figure", "value", "baseline", "ratio", "target", "met", "unit")
    lines = [header] + [
        (
            r.figure,
            f"{r.value:.3g}",
            f"{r.baseline:.3g}",
            f"{r.ratio:.2f}",
            r.target,
            "yes" if r.met else "NO",
            r.unit,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def text(report: dict[str, Any]) -> str:
    """What a run prints: the machine, the rows, the backend calls per RPC."""
    rows = [Row(**{k: v for k, v in row.items() if k != "ratio"}) for row in report["rows"]]
    return "\n".join(
        (f"machine: {report['machine']}", render(rows), render_calls(report["backend_calls"]))
    )


def update_readme(readme: Path, report: dict[str, Any]) -> None:
    """Replace the block between ``BEGIN`` and ``END`` in ``readme`` with the run's text."""
    content = readme.read_text()
    start, end = content.find(BEGIN), content.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {BEGIN!r} ... {END!r} block")
    block = f"{BEGIN}\n```\n{text(report)}\n```\n"
    readme.write_text(content[:start] + block + content[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=LATEST, help="a run's report")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    report = json.loads(args.json.read_text())
    if args.readme is None:
        print(text(report))
    else:
        update_readme(args.readme, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
