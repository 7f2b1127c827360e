"""Desired state of the local provider in SQLite, so it survives a controller restart.

One dedicated thread owns the connection: SQLite calls never block the event
loop, and they are serialised without a lock. Only desired state, the revision
history, the revision each replica slot runs, the pids of running replicas and how
the previous run ended are stored; everything observed is recomputed.

Revisions (rollout.py) live beside the definition they version: every change of
what runs writes the deployment's row and its new revision in one transaction,
and that same transaction checks the caller's ``expected_revision`` first, so a
stale change changes nothing. The history keeps the newest ``HISTORY`` revisions
of a service, plus any older one still needed: the last good one (what an
automatic rollback returns to) and those a replica slot still runs.

The database holds ``secret.*`` config values in plain text. It is kept private
instead of encrypted: the file (and SQLite's -wal and -shm, which inherit its
mode) is 0600 in a 0700 directory owned by the server's user, and replicas run
as another user when the server is root (identity.py). A key stored beside the
data would add nothing against a reader who can open the directory.
``secure_delete`` overwrites removed values instead of leaving them in free pages.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable, RevisionConflict
from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DeploymentSpec,
    PortSpec,
    Resources,
    Revision,
    Rollout,
    RolloutState,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .statedir import chmod_private, touch_private

T = TypeVar("T")
Key = tuple[str, str]

HISTORY = 10
"""Revisions kept per service (beyond these, only the last good one and those still run)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    namespace      TEXT NOT NULL,
    service_id     TEXT NOT NULL,
    spec           TEXT NOT NULL,
    replicas       INTEGER NOT NULL,
    stopped        INTEGER NOT NULL DEFAULT 0,
    config         TEXT NOT NULL DEFAULT '{}',
    config_version INTEGER NOT NULL DEFAULT 1,
    updated_at     REAL NOT NULL,
    PRIMARY KEY (namespace, service_id)
);
CREATE TABLE IF NOT EXISTS namespace_uids (
    namespace TEXT PRIMARY KEY,
    uid       INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    namespace      TEXT NOT NULL,
    service_id     TEXT NOT NULL,
    number         INTEGER NOT NULL,
    spec           TEXT NOT NULL,
    config         TEXT NOT NULL,
    config_version INTEGER NOT NULL,
    created_at     REAL NOT NULL,
    change_cause   TEXT NOT NULL DEFAULT '',
    rollback_of    INTEGER NOT NULL DEFAULT 0,
    automatic      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, service_id, number)
);
CREATE TABLE IF NOT EXISTS slots (
    namespace  TEXT NOT NULL,
    service_id TEXT NOT NULL,
    ordinal    INTEGER NOT NULL,
    revision   INTEGER NOT NULL,
    PRIMARY KEY (namespace, service_id, ordinal)
);
CREATE TABLE IF NOT EXISTS replicas (
    namespace   TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    create_time REAL NOT NULL,
    PRIMARY KEY (namespace, service_id, ordinal)
);
"""


@dataclass(frozen=True, slots=True)
class Desired:
    """One deployment as the caller wants it."""

    spec: DeploymentSpec
    replicas: int
    stopped: bool = False
    config: Mapping[str, str] = field(default_factory=dict)
    config_version: int = 1
    updated_at: float = field(default_factory=time.time)
    held: str = ""
    """Why start-up did not restart it (crashloop.py); empty when it runs as desired."""
    created_at: float = field(default_factory=time.time)
    """When the deployment was first stored (0: by a release that did not record it)."""
    revision: int = 0
    """The desired revision: the one ``spec`` and ``config`` are."""
    good_revision: int = 0
    """The last revision whose rollout succeeded (0: none yet)."""
    rollout: Rollout | None = None
    """How the rollout of ``revision`` went, or goes."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.namespace, self.spec.service_id)

    @property
    def target(self) -> int:
        """Replicas that should be running now."""
        return 0 if self.stopped or self.held else self.replicas

    def changed(self, **changes: Any) -> Desired:
        return replace(self, updated_at=time.time(), **changes)


def spec_to_json(spec: DeploymentSpec) -> str:
    return json.dumps(
        {
            "service_id": spec.service_id,
            "namespace": spec.namespace,
            "image": spec.image,
            "command": list(spec.command),
            "env": dict(spec.env),
            "replicas": spec.replicas,
            "labels": dict(spec.labels),
            "ports": [
                {
                    "container_port": p.container_port,
                    "host_port": p.host_port,
                    "protocol": p.protocol,
                }
                for p in spec.ports
            ],
            "resources": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
            "provider_options": dict(spec.provider_options),
            "progress_deadline_seconds": spec.progress_deadline_seconds,
            "auto_rollback": spec.auto_rollback,
        },
        sort_keys=True,
    )


def spec_from_json(raw: str) -> DeploymentSpec:
    data = json.loads(raw)
    return DeploymentSpec(
        service_id=data["service_id"],
        namespace=data["namespace"],
        image=data.get("image", ""),
        command=tuple(data.get("command", ())),
        env=dict(data.get("env", {})),
        replicas=int(data.get("replicas", 1)),
        labels=dict(data.get("labels", {})),
        ports=tuple(PortSpec(**port) for port in data.get("ports", ())),
        resources=Resources(**data.get("resources", {})),
        provider_options=dict(data.get("provider_options", {})),
        progress_deadline_seconds=float(
            data.get("progress_deadline_seconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
        ),
        auto_rollback=bool(data.get("auto_rollback", False)),
    )


def rollout_to_json(rollout: Rollout | None) -> str:
    if rollout is None:
        return ""
    return json.dumps(
        {
            "state": rollout.state.value,
            "reason": rollout.reason,
            "message": rollout.message,
            "started_at": rollout.started_at.timestamp(),
            "finished_at": rollout.finished_at.timestamp() if rollout.finished_at else None,
        },
        sort_keys=True,
    )


def rollout_from_json(raw: str) -> Rollout | None:
    if not raw:
        return None
    data = json.loads(raw)
    finished = data.get("finished_at")
    return Rollout(
        RolloutState(data["state"]),
        _time(data["started_at"]),
        data.get("reason", ""),
        data.get("message", ""),
        None if finished is None else _time(finished),
    )


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _revision(row: tuple[Any, ...]) -> Revision:
    number, spec, config, version, created, cause, rollback_of, automatic = row
    return Revision(
        number=int(number),
        spec=spec_from_json(spec),
        config=json.loads(config),
        config_version=str(version),
        created_at=_time(created),
        change_cause=cause,
        rollback_of=int(rollback_of),
        automatic=bool(automatic),
    )


_REVISION_COLUMNS = (
    "number, spec, config, config_version, created_at, change_cause, rollback_of, automatic"
)


class StateStore:
    """The SQLite database under ``<state dir>/local``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="alphaswarm-local-db")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._db is None:
                raise RuntimeError("state store is closed")
            try:
                with self._db:  # one transaction per call
                    return fn(self._db)
            except sqlite3.OperationalError as exc:  # disk full, read-only, locked
                raise InfrastructureProviderUnavailable(
                    f"local provider state database {self.path} failed: {exc}",
                    reason=ErrorReason.STATE_STORE_FAILED,
                    metadata={"database": str(self.path)},
                ) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    @property
    def files(self) -> list[Path]:
        return [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))]

    async def open(self) -> None:
        def connect() -> None:
            touch_private(self.path)  # before SQLite creates it: -wal and -shm copy its mode
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA secure_delete=ON")
                db.executescript(_SCHEMA)
                _migrate(db)
                chmod_private(self.files)
            except BaseException:
                db.close()
                raise
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def load(self) -> list[Desired]:
        def query(db: sqlite3.Connection) -> list[Desired]:
            rows = db.execute(
                "SELECT spec, replicas, stopped, config, config_version, updated_at, held, "
                "created_at, revision, good_revision, rollout "
                "FROM deployments ORDER BY namespace, service_id"
            ).fetchall()
            return [
                Desired(
                    spec=spec_from_json(spec),
                    replicas=replicas,
                    stopped=bool(stopped),
                    config=json.loads(config),
                    config_version=version,
                    updated_at=updated,
                    held=held,
                    created_at=created,
                    revision=revision,
                    good_revision=good,
                    rollout=rollout_from_json(rollout),
                )
                for (
                    spec,
                    replicas,
                    stopped,
                    config,
                    version,
                    updated,
                    held,
                    created,
                    revision,
                    good,
                    rollout,
                ) in rows
            ]

        return await self._call(query)

    async def save(
        self, desired: Desired, *, expected: int = 0, revision: Revision | None = None
    ) -> None:
        """Write the deployment's row, and ``revision`` when the change makes one, in one
        transaction that first checks ``expected`` (RevisionConflict when stale: nothing
        is written)."""

        def write(db: sqlite3.Connection) -> None:
            _check(db, desired.key, expected)
            _upsert(db, desired)
            if revision is not None:
                _insert_revision(db, desired.key, revision)
            _prune(db, desired.key, desired.good_revision)

        await self._call(write)

    async def check(self, key: Key, expected: int) -> None:
        """RevisionConflict unless the service is at ``expected`` (a change of nothing)."""
        await self._call(lambda db: _check(db, key, expected))

    async def revisions(self, key: Key) -> list[Revision]:
        """The service's history, newest first."""

        def query(db: sqlite3.Connection) -> list[Revision]:
            rows = db.execute(
                f"SELECT {_REVISION_COLUMNS} FROM revisions "
                "WHERE namespace = ? AND service_id = ? ORDER BY number DESC",
                key,
            ).fetchall()
            return [_revision(row) for row in rows]

        return await self._call(query)

    async def revision(self, key: Key, number: int) -> Revision | None:
        def query(db: sqlite3.Connection) -> Revision | None:
            row = db.execute(
                f"SELECT {_REVISION_COLUMNS} FROM revisions "
                "WHERE namespace = ? AND service_id = ? AND number = ?",
                (*key, number),
            ).fetchone()
            return None if row is None else _revision(row)

        return await self._call(query)

    # -- which revision each replica slot runs ------------------------------------------------

    async def slots(self, key: Key) -> dict[int, int]:
        """Ordinal -> the revision its replica runs (what a restart starts it with)."""

        def query(db: sqlite3.Connection) -> dict[int, int]:
            rows = db.execute(
                "SELECT ordinal, revision FROM slots WHERE namespace = ? AND service_id = ?", key
            )
            return {int(ordinal): int(revision) for ordinal, revision in rows}

        return await self._call(query)

    async def set_slot(self, key: Key, ordinal: int, revision: int) -> None:
        await self._call(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO slots VALUES (?, ?, ?, ?)", (*key, ordinal, revision)
            ).close()
        )

    async def drop_slot(self, key: Key, ordinal: int) -> None:
        await self._call(
            lambda db: db.execute(
                "DELETE FROM slots WHERE namespace = ? AND service_id = ? AND ordinal = ?",
                (*key, ordinal),
            ).close()
        )

    async def delete(self, key: Key, *, expected: int = 0) -> bool:
        """Forget a deployment: its row (spec, config, secrets), its revisions (specs and
        configs, secrets included), its slots and its recorded pids; first, in the same
        transaction, RevisionConflict unless it is at ``expected``.

        Then the write-ahead log is checkpointed and truncated, so that the old pages
        (``secure_delete`` zeroes them in the database itself) do not linger there.
        """

        def delete(db: sqlite3.Connection) -> bool:
            _check(db, key, expected)
            for table in ("replicas", "revisions", "slots"):
                db.execute(f"DELETE FROM {table} WHERE namespace = ? AND service_id = ?", key)
            cursor = db.execute(
                "DELETE FROM deployments WHERE namespace = ? AND service_id = ?", key
            )
            return cursor.rowcount > 0

        deleted = await self._call(delete)
        await self._checkpoint()
        return deleted

    async def _checkpoint(self) -> None:
        await self._call(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    async def record_pid(
        self, key: tuple[str, str], ordinal: int, pid: int, create_time: float
    ) -> None:
        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO replicas VALUES (?, ?, ?, ?, ?)",
                (*key, ordinal, pid, create_time),
            )

        await self._call(upsert)

    async def forget_pid(self, key: tuple[str, str], ordinal: int, pid: int) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM replicas WHERE namespace = ? AND service_id = ? "
                "AND ordinal = ? AND pid = ?",
                (*key, ordinal, pid),
            )

        await self._call(delete)

    async def recorded_pids(self) -> list[tuple[int, float]]:
        def query(db: sqlite3.Connection) -> list[tuple[int, float]]:
            return [
                (int(pid), float(created))
                for pid, created in db.execute("SELECT pid, create_time FROM replicas")
            ]

        return await self._call(query)

    async def clear_pids(self) -> None:
        await self._call(lambda db: db.execute("DELETE FROM replicas").close())

    async def ping(self) -> int:
        """Number of stored deployments; proves the database answers."""

        def query(db: sqlite3.Connection) -> int:
            (count,) = db.execute("SELECT count(*) FROM deployments").fetchone()
            return int(count)

        return await self._call(query)

    # -- one uid per namespace (identity.py) --------------------------------------------------

    async def namespace_uids(self) -> dict[str, int]:
        def query(db: sqlite3.Connection) -> dict[str, int]:
            return dict(db.execute("SELECT namespace, uid FROM namespace_uids").fetchall())

        return await self._call(query)

    async def allocate_uid(
        self, namespace: str, first: int, last: int, taken: Callable[[int], bool]
    ) -> int | None:
        """The namespace's uid: the one it has, else the lowest free one; None when none is.

        A uid is never given to a second namespace, even after the first is gone:
        files its replicas left must not change hands.
        """

        def allocate(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT uid FROM namespace_uids WHERE namespace = ?", (namespace,)
            ).fetchone()
            if row is not None:
                return int(row[0])
            used = {uid for (uid,) in db.execute("SELECT uid FROM namespace_uids")}
            for uid in range(first, last + 1):
                if uid not in used and not taken(uid):
                    db.execute("INSERT INTO namespace_uids VALUES (?, ?)", (namespace, uid))
                    return uid
            return None

        return await self._call(allocate)

    # -- how runs of the server end (crashloop.py) --------------------------------------------

    async def begin_run(self, limit: int, reason: str) -> list[tuple[tuple[str, str], int]]:
        """Count this start against deployments that were running when the last run died.

        Returns the deployments newly held (``limit`` abnormal ends in a row) and
        their strike count; ``reason`` (formatted with ``strikes``) says why in status.
        """

        def run(db: sqlite3.Connection) -> list[tuple[tuple[str, str], int]]:
            row = db.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
            if row is not None and row[0] in ("running", "stable"):
                db.execute(
                    "UPDATE deployments SET crash_streak = crash_streak + 1 "
                    "WHERE stopped = 0 AND held = '' AND replicas > 0"
                )
                db.execute(
                    "UPDATE deployments SET crash_streak = 0 WHERE stopped = 1 OR replicas = 0"
                )
            else:
                db.execute("UPDATE deployments SET crash_streak = 0")
            held: list[tuple[tuple[str, str], int]] = []
            if limit > 0:
                for namespace, service_id, strikes in db.execute(
                    "SELECT namespace, service_id, crash_streak FROM deployments "
                    "WHERE crash_streak >= ? AND held = '' AND stopped = 0 AND replicas > 0",
                    (limit,),
                ).fetchall():
                    db.execute(
                        "UPDATE deployments SET held = ? WHERE namespace = ? AND service_id = ?",
                        (reason.format(strikes=strikes), namespace, service_id),
                    )
                    held.append(((namespace, service_id), strikes))
            _set_run(db, "running")
            return held

        return await self._call(run)

    async def end_run(self, how: str) -> None:
        """``stable`` (up long enough) or ``stopped`` (a clean shutdown): the streak ends."""

        def run(db: sqlite3.Connection) -> None:
            db.execute("UPDATE deployments SET crash_streak = 0")
            _set_run(db, how)

        await self._call(run)


def _check(db: sqlite3.Connection, key: Key, expected: int) -> None:
    row = db.execute(
        "SELECT revision FROM deployments WHERE namespace = ? AND service_id = ?", key
    ).fetchone()
    RevisionConflict.check(key[1], key[0], expected, 0 if row is None else int(row[0]))


def _upsert(db: sqlite3.Connection, desired: Desired) -> None:
    db.execute(
        "INSERT INTO deployments (namespace, service_id, spec, replicas, stopped, "
        "config, config_version, updated_at, held, created_at, revision, good_revision, "
        "rollout) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (namespace, service_id) DO UPDATE SET spec = excluded.spec, "
        "replicas = excluded.replicas, stopped = excluded.stopped, "
        "config = excluded.config, config_version = excluded.config_version, "
        "updated_at = excluded.updated_at, held = excluded.held, "
        "revision = excluded.revision, good_revision = excluded.good_revision, "
        "rollout = excluded.rollout",
        (
            desired.spec.namespace,
            desired.spec.service_id,
            spec_to_json(desired.spec),
            desired.replicas,
            int(desired.stopped),
            json.dumps(dict(desired.config), sort_keys=True),
            desired.config_version,
            desired.updated_at,
            desired.held,
            desired.created_at,
            desired.revision,
            desired.good_revision,
            rollout_to_json(desired.rollout),
        ),
    )


def _insert_revision(db: sqlite3.Connection, key: Key, revision: Revision) -> None:
    db.execute(
        f"INSERT INTO revisions (namespace, service_id, {_REVISION_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *key,
            revision.number,
            spec_to_json(replace(revision.spec, replicas=0)),
            json.dumps(dict(revision.config), sort_keys=True),
            int(revision.config_version),
            revision.created_at.timestamp(),
            revision.change_cause,
            revision.rollback_of,
            int(revision.automatic),
        ),
    )


def _prune(db: sqlite3.Connection, key: Key, good: int) -> None:
    """Beyond the newest HISTORY revisions, keep only the last good one and those run."""
    db.execute(
        "DELETE FROM revisions WHERE namespace = ?1 AND service_id = ?2 AND number <= "
        "(SELECT max(number) FROM revisions WHERE namespace = ?1 AND service_id = ?2) - ?3 "
        "AND number != ?4 AND number NOT IN "
        "(SELECT revision FROM slots WHERE namespace = ?1 AND service_id = ?2)",
        (*key, HISTORY, good),
    )


def _set_run(db: sqlite3.Connection, state: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('run', ?)", (state,))


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added since the first schema; ADD COLUMN keeps existing rows."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(deployments)")}
    with db:
        if "held" not in columns:
            db.execute("ALTER TABLE deployments ADD COLUMN held TEXT NOT NULL DEFAULT ''")
        if "created_at" not in columns:
            db.execute("ALTER TABLE deployments ADD COLUMN created_at REAL NOT NULL DEFAULT 0")
        if "crash_streak" not in columns:
            db.execute("ALTER TABLE deployments ADD COLUMN crash_streak INTEGER NOT NULL DEFAULT 0")
        for name, kind in (
            ("revision", "INTEGER NOT NULL DEFAULT 0"),
            ("good_revision", "INTEGER NOT NULL DEFAULT 0"),
            ("rollout", "TEXT NOT NULL DEFAULT ''"),
        ):
            if name not in columns:
                db.execute(f"ALTER TABLE deployments ADD COLUMN {name} {kind}")
        _first_revisions(db)


def _first_revisions(db: sqlite3.Connection) -> None:
    """Deployments stored before revisions existed: what they run becomes revision 1,
    rolled out (it was running)."""
    rows = db.execute(
        "SELECT namespace, service_id, spec, config, config_version, updated_at "
        "FROM deployments WHERE revision = 0"
    ).fetchall()
    for namespace, service_id, spec, config, version, updated in rows:
        when = _time(updated)
        first = Revision(1, spec_from_json(spec), json.loads(config), str(version), when)
        _insert_revision(db, (namespace, service_id), first)
        done = Rollout(RolloutState.SUCCEEDED, when, finished_at=when)
        db.execute(
            "UPDATE deployments SET revision = 1, good_revision = 1, rollout = ? "
            "WHERE namespace = ? AND service_id = ?",
            (rollout_to_json(done), namespace, service_id),
        )
