"""Settings of the local provider, read once from the environment it was given.

Everything has a default that suits a developer laptop; tests shorten the
timings (grace, backoff) through the same variables an operator would use.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alphaswarm_core.providers.errors import SettingInvalid

STATE_DIR_ENV = "ALPHASWARM_CP_STATE_DIR"
DEFAULT_STATE_DIR = "~/.local/state/alphaswarm"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RUN_AS_ENV = "ALPHASWARM_LOCAL_RUN_AS"
UID_RANGE_ENV = "ALPHASWARM_LOCAL_UID_RANGE"
ALLOW_ROOT_ENV = "ALPHASWARM_LOCAL_ALLOW_ROOT"
ALLOWED_COMMANDS_ENV = "ALPHASWARM_LOCAL_ALLOWED_COMMANDS"
ALLOWED_CWDS_ENV = "ALPHASWARM_LOCAL_ALLOWED_CWDS"
CGROUP_ENV = "ALPHASWARM_LOCAL_CGROUP"
CRASH_LOOP_LIMIT_ENV = "ALPHASWARM_LOCAL_CRASH_LOOP_LIMIT"
ROLLOUT_EXITS_ENV = "ALPHASWARM_LOCAL_ROLLOUT_EXITS"
LOG_FILE_BYTES_ENV = "ALPHASWARM_LOCAL_LOG_FILE_BYTES"
LOG_ROTATED_FILES_ENV = "ALPHASWARM_LOCAL_LOG_ROTATED_FILES"
LOG_RATE_ENV = "ALPHASWARM_LOCAL_LOG_RATE_BYTES"

MIB = 1024 * 1024
_SIZE = re.compile(r"(\d{1,13})\s*(B|KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}

#: Variables of the controller's own environment that replicas inherit. Anything
#: else (credentials of the controller, its venv, its settings) stays out, so a
#: replica behaves the same whichever shell started the server. HOME, USER and
#: LOGNAME describe the replica's own user instead (see identity.py).
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

#: The user replicas run as when the server runs as root and nothing is configured,
#: if it exists; else ``nobody``.
DEDICATED_USER = "alphaswarm-replica"


def _bad(name: str, raw: str, what: str) -> SettingInvalid:
    return SettingInvalid(name, f"must be {what}, not {raw!r}")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 24 * 3600:
        raise _bad(name, raw, "a number of seconds between 0 and 86400")
    return value


def _count(env: Mapping[str, str], name: str, default: int, high: int = 1000) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > high:
        raise _bad(name, raw, f"a whole number between 0 and {high}")
    return int(raw)


def _bytes(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A size: bytes, or a number with ``KiB``, ``MiB`` or ``GiB``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = _SIZE.fullmatch(raw)
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else -1
    if not low <= value <= high:
        raise _bad(name, raw, f"a size from {low} to {high} bytes (units: KiB, MiB, GiB)")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise _bad(name, raw, "true or false")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise _bad(name, raw, " or ".join(choices))
    return raw


def _rollout_exits(env: Mapping[str, str]) -> int:
    value = _count(env, ROLLOUT_EXITS_ENV, 3, high=100)
    if value < 1:
        raise _bad(ROLLOUT_EXITS_ENV, env[ROLLOUT_EXITS_ENV], "a whole number between 1 and 100")
    return value


DEFAULT_UID_RANGE = (3_000_000, 3_065_535)
"""Where a root server takes one uid per namespace when nothing else is configured: far
above the ids distributions give out, and 65,536 namespaces wide."""


def _uid_range(env: Mapping[str, str]) -> tuple[int, int] | None:
    """``FIRST-LAST``: uids (and gids of the same number) given out one per namespace.

    Unset: ``DEFAULT_UID_RANGE`` on a root server that was not told whom replicas run as
    (ALPHASWARM_LOCAL_RUN_AS, or root with ALPHASWARM_LOCAL_ALLOW_ROOT), so that replicas
    of different namespaces never share a uid; none otherwise. ``off``: one user for every
    namespace (the run-as user, ``alphaswarm-replica`` or nobody).
    """
    raw = env.get(UID_RANGE_ENV, "").strip()
    if raw.lower() == "off":
        return None
    if not raw:
        told = bool(env.get(RUN_AS_ENV, "").strip()) or _flag(env, ALLOW_ROOT_ENV, False)
        return DEFAULT_UID_RANGE if os.geteuid() == 0 and not told else None
    first, _, last = raw.partition("-")
    if not (first.isdigit() and last.isdigit() and 1000 <= int(first) <= int(last) < 2**31 - 1):
        raise _bad(UID_RANGE_ENV, raw, "FIRST-LAST, two uids with 1000 <= FIRST <= LAST")
    if env.get(RUN_AS_ENV, "").strip():
        raise _bad(UID_RANGE_ENV, raw, f"unset when {RUN_AS_ENV} is set (choose one)")
    return int(first), int(last)


def _paths(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A ``:``-separated list of absolute paths, each resolved once (symlinks, ``..``).

    An entry ending in ``/`` stands for everything under that directory and keeps
    its trailing ``/`` after resolution; any other entry is one file.
    """
    raw = env.get(name, "")
    entries: list[str] = []
    for part in raw.split(":"):
        item = part.strip()
        if not item:
            continue
        if not os.path.isabs(item):
            raise _bad(name, raw, "a ':'-separated list of absolute paths")
        resolved = os.path.realpath(item)
        entries.append(resolved.rstrip("/") + "/" if item.endswith("/") else resolved)
    return tuple(entries)


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
    rollout_exits: int = 3
    """Exits in a row of a replica of the new revision that fail its rollout (rollout.py)."""
    pdeathsig: bool = sys.platform == "linux"
    """Ask the kernel to SIGKILL replicas when the controller dies (Linux only)."""
    run_as: str = ""
    """``user[:group]`` replicas run as (ALPHASWARM_LOCAL_RUN_AS); empty = the default."""
    allow_root: bool = False
    """Replicas may run as root (ALPHASWARM_LOCAL_ALLOW_ROOT); off unless an operator says so."""
    uid_range: tuple[int, int] | None = None
    """One uid per namespace from this range (ALPHASWARM_LOCAL_UID_RANGE); root servers only."""
    allowed_commands: tuple[str, ...] = ()
    """Executables (or ``dir/`` prefixes) replicas may run; empty = any."""
    allowed_cwds: tuple[str, ...] = ()
    """Directories (and what is under them) a replica may use as working directory; empty = any."""
    cgroup: str = "auto"
    """``auto`` (a cgroup per replica where the machine allows it), ``on`` (required), ``off``."""
    crash_loop_limit: int = 3
    """Abnormal server deaths in a row after which running deployments are held; 0 = never."""
    crash_loop_reset: float = 300.0
    """Uptime after which the server counts as stable again (the death streak restarts)."""
    sweep_interval: float = 1.0
    """How often escaped replica processes are looked for when no cgroup is used."""
    log_file_bytes: int = 10 * MIB
    """A replica's log file is rotated at this size (ALPHASWARM_LOCAL_LOG_FILE_BYTES)."""
    log_rotated_files: int = 2
    log_rate_bytes: int = 8 * MIB
    """Log records a replica slot may write per second (ALPHASWARM_LOCAL_LOG_RATE_BYTES)."""
    """Older files kept per replica beside the current one (ALPHASWARM_LOCAL_LOG_ROTATED_FILES)."""

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
            rollout_exits=_rollout_exits(env),
            pdeathsig=sys.platform == "linux" and _flag(env, "ALPHASWARM_LOCAL_PDEATHSIG", True),
            run_as=env.get(RUN_AS_ENV, "").strip(),
            allow_root=_flag(env, ALLOW_ROOT_ENV, False),
            uid_range=_uid_range(env),
            allowed_commands=_paths(env, ALLOWED_COMMANDS_ENV),
            allowed_cwds=_paths(env, ALLOWED_CWDS_ENV),
            cgroup=_choice(env, CGROUP_ENV, "auto", ("auto", "on", "off")),
            crash_loop_limit=_count(env, CRASH_LOOP_LIMIT_ENV, 3),
            crash_loop_reset=_seconds(env, "ALPHASWARM_LOCAL_CRASH_LOOP_RESET_SECONDS", 300.0),
            sweep_interval=max(0.1, _seconds(env, "ALPHASWARM_LOCAL_SWEEP_SECONDS", 1.0)),
            log_file_bytes=_bytes(env, LOG_FILE_BYTES_ENV, 10 * MIB, 64 * 1024, 1024 * MIB),
            log_rotated_files=_count(env, LOG_ROTATED_FILES_ENV, 2, high=20),
            log_rate_bytes=_bytes(env, LOG_RATE_ENV, 8 * MIB, 64 * 1024, 1024 * MIB),
        )

    @property
    def root(self) -> Path:
        """The local provider's own corner of the shared state directory."""
        return self.state_dir / "local"

    @property
    def database(self) -> Path:
        return self.root / "state.sqlite3"

    @property
    def logs(self) -> Path:
        """``<namespace>/<service>/<n>.log`` (and its rotated files) under it (logfiles.py)."""
        return self.root / "logs"

    def log_dir(self, namespace: str, service_id: str) -> Path:
        return self.logs / namespace / service_id
