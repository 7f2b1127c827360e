"""Mutation score per module from a finished ``mutmut run`` (see scripts/mutation.sh).

Reads mutmut's per-file results (``mutants/**/*.py.meta``), prints killed/total per
module and the name of every mutant that was not killed, and exits 1 when the overall
share of killed mutants is below ``--target`` percent. Timeouts count as killed: the
mutant made a test hang, which the test run reports as a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

FAILED = {1, 3, 37}
"""mutmut's exit codes for a mutant a test failed on (1; 3 a pytest internal error; 37
caught by the type check)."""
TIMED_OUT = {36, 24, -24, 152, 255}
"""Tests ran past mutmut's time limit on the mutant (36; SIGXCPU 24/-24/152; 255)."""
KILLED = FAILED | TIMED_OUT
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mutants", type=Path, help="the mutants/ directory mutmut wrote")
    parser.add_argument("--target", type=float, default=90.0, help="least killed share, %%")
    args = parser.parse_args(argv)

    rows: list[tuple[str, int, int]] = []
    timeouts = 0
    survivors: list[tuple[str, str]] = []
    for meta in sorted(args.mutants.rglob("*.py.meta")):
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        module = str(meta.relative_to(args.mutants)).removesuffix(".meta")
        killed = sum(1 for code in codes.values() if code in KILLED)
        timeouts += sum(1 for code in codes.values() if code in TIMED_OUT)
        rows.append((module, killed, len(codes)))
        survivors += [
            (name, STATUS.get(code, f"exit {code}"))
            for name, code in sorted(codes.items())
            if code not in KILLED
        ]
    if not rows:
        print(f"no mutmut results under {args.mutants}", file=sys.stderr)
        return 2

    width = max(len(module) for module, _, _ in rows)
    for module, killed, total in rows:
        print(f"{module:<{width}}  {killed:>4}/{total:<4}  {100 * killed / total:5.1f} %")
    killed = sum(k for _, k, _ in rows)
    total = sum(t for _, _, t in rows)
    score = 100 * killed / total
    print(f"{'all':<{width}}  {killed:>4}/{total:<4}  {score:5.1f} %")
    print(f"(killed includes {timeouts} whose tests ran past the time limit)")
    if survivors:
        print(f"\nnot killed ({dict(Counter(status for _, status in survivors))}):")
        for name, status in survivors:
            print(f"  {name}: {status}")
    if score < args.target:
        print(f"\nmutation score {score:.1f} % is below the target {args.target:.0f} %")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
