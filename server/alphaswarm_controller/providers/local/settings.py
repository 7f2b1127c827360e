"""Settings of the local provider, read once from the environment it was given.

Everything has a default that suits a developer laptop; tests shorten the
timings (grace, backoff) through the same variables an operator would use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.reasons import ErrorReason

STATE_DIR_ENV = "ALPHASWARM_CP_STATE_DIR"
DEFAULT_STATE_DIR = "~/.local/state/alphaswarm"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Variables of the controller's own environment that replicas inherit. Anything
#: else (credentials of the controller, its venv, its settings) stays out, so a
#: replica behaves the same whichever shell started the server.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 24 * 3600:
        raise InfrastructureProviderUnavailable(
            f"{name} must be a number of seconds between 0 and 86400, not {raw!r}",
            reason=ErrorReason.SETTING_INVALID,
            metadata={"setting": name},
        )
    return value


@dataclass(frozen=True, slots=True)
class LocalSettings:
    state_dir: Path
    stop_grace: float = 10.0
    """SIGTERM to SIGKILL, per replica (ALPHASWARM_LOCAL_STOP_GRACE_SECONDS)."""
    ready_after: float = 0.5
    """A replica counts as ready once its process has been alive this long."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 10.0
    """Uptime after which a crash starts the backoff from ``backoff_initial`` again."""
    rollout_timeout: float = 60.0
    """How long a rolling restart waits for each new replica to become ready."""
    pdeathsig: bool = sys.platform == "linux"
    """Ask the kernel to SIGKILL replicas when the controller dies (Linux only)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalSettings:
        raw_dir = env.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
        home = env.get("HOME")
        if raw_dir.startswith("~") and home:
            raw_dir = home + raw_dir[1:]
        state_dir = Path(os.path.expanduser(raw_dir)).absolute()
        return cls(
            state_dir=state_dir,
            stop_grace=_seconds(env, "ALPHASWARM_LOCAL_STOP_GRACE_SECONDS", 10.0),
            ready_after=_seconds(env, "ALPHASWARM_LOCAL_READY_SECONDS", 0.5),
            backoff_initial=max(0.05, _seconds(env, "ALPHASWARM_LOCAL_BACKOFF_SECONDS", 0.5)),
            backoff_max=_seconds(env, "ALPHASWARM_LOCAL_BACKOFF_MAX_SECONDS", 30.0),
            stable_after=_seconds(env, "ALPHASWARM_LOCAL_STABLE_SECONDS", 10.0),
            rollout_timeout=_seconds(env, "ALPHASWARM_LOCAL_ROLLOUT_TIMEOUT_SECONDS", 60.0),
            pdeathsig=sys.platform == "linux"
            and env.get("ALPHASWARM_LOCAL_PDEATHSIG", "1") not in ("0", "false", "no"),
        )

    @property
    def root(self) -> Path:
        """The local provider's own corner of the shared state directory."""
        return self.state_dir / "local"

    @property
    def database(self) -> Path:
        return self.root / "state.sqlite3"

    def log_path(self, namespace: str, service_id: str, ordinal: int) -> Path:
        return self.root / "logs" / namespace / service_id / f"{ordinal}.log"
