"""How many examples a property test draws."""

from __future__ import annotations

import os


def examples(count: int) -> int:
    """``count``, or a tenth of it (at least 10) while mutmut tests a mutant
    (``MUTANT_UNDER_TEST``; scripts/mutation.sh): each mutant reruns every test that
    reaches its function, and the score is then a lower bound of what the full run
    catches."""
    return max(10, count // 10) if os.environ.get("MUTANT_UNDER_TEST") else count
