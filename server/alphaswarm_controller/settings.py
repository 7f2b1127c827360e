"""Server settings from the environment (the names docs/operations.md documents)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alphaswarm_core.providers.models import ALIAS_RULE, is_alias

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


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _alias(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or default).strip()
    if not is_alias(value):
        raise SystemExit(f"{name}: {value[:64]!r} is not a provider alias ({ALIAS_RULE})")
    return value


def _reflection(raw: str) -> str:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return "on"
    if value in ("0", "false", "no", "off"):
        return "off"
    if value == "auth":
        return "auth"
    raise SystemExit(f"ALPHASWARM_CP_REFLECTION must be on, off or auth, not {raw!r}")


def _metrics_listen(raw: str | None) -> str | None:
    """``host:port`` of the /metrics endpoint; unset, empty or "off" = no endpoint."""
    value = (raw or "").strip()
    if value.lower() in ("", "off", "0", "false", "no"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SystemExit(
            f"ALPHASWARM_CP_METRICS_LISTEN must be host:port (e.g. 127.0.0.1:9464), not {raw!r}"
        )
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}, not {env.get(name)!r}")
    return value


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str
    default_provider: str
    providers: tuple[str, ...]
    """Providers opened at start-up and reported on grpc.health.v1 under their alias."""
    state_dir: Path
    reflection: str
    """"on", "off", or "auth" (reflection needs a valid token)."""
    shutdown_grace_seconds: float
    call_timeout_seconds: float
    health_interval_seconds: float
    log_level: str
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """When set, clients must present a certificate signed by this CA (mTLS)."""
    insecure: bool = False
    """Allow plaintext on a non-loopback address (behind a TLS-terminating proxy)."""
    tokens_file: Path | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    max_streams_per_connection: int = 1000
    max_streams: int = 10_000
    metrics_listen: str | None = None
    """host:port of the Prometheus /metrics endpoint; None = off (port 0 picks one)."""
    tracing: str = "off"
    """"off" or "otel" (OpenTelemetry, configured by the standard OTEL_* environment)."""
    log_format: str = "text"
    """"text" (human) or "json" (one object per line); both carry the request id."""

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        default_provider = _alias(env, "ALPHASWARM_CP_PROVIDER", DEFAULT_PROVIDER)
        listed = [p.strip() for p in env.get("ALPHASWARM_CP_PROVIDERS", "").split(",")]
        for alias in listed:
            if alias and not is_alias(alias):
                shown = alias[:64]
                raise SystemExit(
                    f"ALPHASWARM_CP_PROVIDERS: {shown!r} is not a provider alias ({ALIAS_RULE})"
                )
        providers = tuple(dict.fromkeys([default_provider, *(p for p in listed if p)]))
        return cls(
            listen=env.get("ALPHASWARM_CP_LISTEN") or DEFAULT_LISTEN,
            default_provider=default_provider,
            providers=providers,
            state_dir=Path(env.get("ALPHASWARM_CP_STATE_DIR") or default_state_dir(env)),
            reflection=_reflection(env.get("ALPHASWARM_CP_REFLECTION", "on")),
            shutdown_grace_seconds=_float(env, "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS", 15.0),
            call_timeout_seconds=_float(env, "ALPHASWARM_CP_CALL_TIMEOUT_SECONDS", 120.0),
            health_interval_seconds=_float(env, "ALPHASWARM_CP_HEALTH_INTERVAL_SECONDS", 30.0),
            log_level=(env.get("ALPHASWARM_CP_LOG_LEVEL") or "INFO").upper(),
            tls_cert=_path(env, "ALPHASWARM_CP_TLS_CERT"),
            tls_key=_path(env, "ALPHASWARM_CP_TLS_KEY"),
            tls_client_ca=_path(env, "ALPHASWARM_CP_TLS_CLIENT_CA"),
            insecure=_flag(env, "ALPHASWARM_CP_INSECURE", False),
            tokens_file=_path(env, "ALPHASWARM_CP_TOKENS_FILE"),
            max_message_bytes=int(_float(env, "ALPHASWARM_CP_MAX_MESSAGE_BYTES", 4 * 2**20)),
            max_streams_per_connection=int(
                _float(env, "ALPHASWARM_CP_MAX_STREAMS_PER_CONNECTION", 1000)
            ),
            max_streams=int(_float(env, "ALPHASWARM_CP_MAX_STREAMS", 10_000)),
            metrics_listen=_metrics_listen(env.get("ALPHASWARM_CP_METRICS_LISTEN")),
            tracing=_choice(env, "ALPHASWARM_CP_TRACING", ("off", "otel"), "off"),
            log_format=_choice(env, "ALPHASWARM_CP_LOG_FORMAT", ("text", "json"), "text"),
        )
