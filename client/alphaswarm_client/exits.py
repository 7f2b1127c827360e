"""The CLI's exit codes and its usage error, shared by every command module.

0 success; 1 the server (or the network) refused the call; 2 a usage error; 3 outcome
unknown (a change whose deadline expired, or a rollout still in progress when the wait
ended: check with ``status``); 4 the change was made but its rollout FAILED (``--wait``,
``rollout status``). cli.py adds the codes of signals and a closed stdout.
"""

from __future__ import annotations

EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_OUTCOME_UNKNOWN = 3
"""A change whose deadline expired: the server runs accepted changes to completion, so
it may have been applied. ``status`` tells. Also: a rollout still in progress when the
wait for it ended (``--wait-timeout``)."""
EXIT_ROLLOUT_FAILED = 4
"""The change was accepted (a new revision exists) but its rollout FAILED; the reason
and the backend's message are printed."""


class UsageError(Exception):
    """Arguments that parse but do not make sense together; exit code 2."""
