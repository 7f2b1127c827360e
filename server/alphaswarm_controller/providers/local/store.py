"""Desired state of the local provider in SQLite, so it survives a controller restart.

One dedicated thread owns the connection: SQLite calls never block the event
loop, and they are serialised without a lock. Only desired state and the pids
of running replicas are stored; everything observed is recomputed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.models import DeploymentSpec, PortSpec, Resources
from alphaswarm_core.providers.reasons import ErrorReason

T = TypeVar("T")

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

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.namespace, self.spec.service_id)

    @property
    def target(self) -> int:
        """Replicas that should be running now."""
        return 0 if self.stopped else self.replicas

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

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
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
                "SELECT spec, replicas, stopped, config, config_version, updated_at "
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
                )
                for spec, replicas, stopped, config, version, updated in rows
            ]

        return await self._call(query)

    async def save(self, desired: Desired) -> None:
        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO deployments (namespace, service_id, spec, replicas, stopped, "
                "config, config_version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, service_id) DO UPDATE SET spec = excluded.spec, "
                "replicas = excluded.replicas, stopped = excluded.stopped, "
                "config = excluded.config, config_version = excluded.config_version, "
                "updated_at = excluded.updated_at",
                (
                    desired.spec.namespace,
                    desired.spec.service_id,
                    spec_to_json(desired.spec),
                    desired.replicas,
                    int(desired.stopped),
                    json.dumps(dict(desired.config), sort_keys=True),
                    desired.config_version,
                    desired.updated_at,
                ),
            )

        await self._call(upsert)

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
