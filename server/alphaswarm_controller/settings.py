"""Server settings from the environment (names fixed by DESIGN.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_PROVIDER = "local"


def default_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "alphaswarm"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number of seconds, not {raw!r}") from exc


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str
    default_provider: str
    providers: tuple[str, ...]
    """Providers opened at start-up and reported on grpc.health.v1 under their alias."""
    state_dir: Path
    reflection: bool
    shutdown_grace_seconds: float
    call_timeout_seconds: float
    health_interval_seconds: float
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        default_provider = env.get("ALPHASWARM_CP_PROVIDER") or DEFAULT_PROVIDER
        listed = [p.strip() for p in env.get("ALPHASWARM_CP_PROVIDERS", "").split(",")]
        providers = tuple(dict.fromkeys([default_provider, *(p for p in listed if p)]))
        return cls(
            listen=env.get("ALPHASWARM_CP_LISTEN") or DEFAULT_LISTEN,
            default_provider=default_provider,
            providers=providers,
            state_dir=Path(env.get("ALPHASWARM_CP_STATE_DIR") or default_state_dir(env)),
            reflection=_flag(env, "ALPHASWARM_CP_REFLECTION", True),
            shutdown_grace_seconds=_float(env, "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS", 15.0),
            call_timeout_seconds=_float(env, "ALPHASWARM_CP_CALL_TIMEOUT_SECONDS", 120.0),
            health_interval_seconds=_float(env, "ALPHASWARM_CP_HEALTH_INTERVAL_SECONDS", 30.0),
            log_level=(env.get("ALPHASWARM_CP_LOG_LEVEL") or "INFO").upper(),
        )
