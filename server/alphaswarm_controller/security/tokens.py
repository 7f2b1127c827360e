"""Bearer tokens with roles, loaded from a file that holds only their SHA-256 hashes.

File format (YAML or JSON)::

    tokens:
      - name: ci-deployer          # shown in audit lines, never the token
        sha256: 9f86d08...         # `alphaswarm-server hash-token` prints it
        role: operator             # viewer | operator | admin
        namespaces: [team-a]       # optional restriction
        providers: [kubernetes]    # optional restriction

Tokens are random strings of high entropy, so a plain SHA-256 (not a slow
password hash) is the right digest; a presented token's digest is compared
with every entry in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alphaswarm_core.call import Caller


class Role(enum.IntEnum):
    """The numbers of ``alphaswarm.provider.v1.Role``."""

    VIEWER = 1
    """List*, Get*, CheckHealth, StreamMetrics, WatchDeployment."""
    OPERATOR = 2
    """Viewer, plus StartDeployment, ScaleDeployment, StopDeployment, ApplyConfig."""
    ADMIN = 3
    """Everything."""


Principal = Caller
"""A token's holder: name, role and restrictions (the call context's ``Caller``)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "asw_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class TokenStore:
    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        document: Any = yaml.safe_load(path.read_text())
        rows = document.get("tokens") if isinstance(document, Mapping) else None
        if not isinstance(rows, list) or not rows:
            raise SystemExit(f"{path}: expected a non-empty 'tokens' list")
        return cls([_entry(path, index, row) for index, row in enumerate(rows)])

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:  # no early exit: the time taken says nothing
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found


def _entry(path: Path, index: int, row: Any) -> _Entry:
    where = f"{path}: tokens[{index}]"
    if not isinstance(row, Mapping):
        raise SystemExit(f"{where}: expected a mapping")
    try:
        digest = bytes.fromhex(str(row["sha256"]))
        role = Role[str(row["role"]).upper()]
        name = str(row["name"])
    except (KeyError, ValueError) as exc:
        raise SystemExit(
            f"{where}: needs name, sha256 (64 hex digits) and role (viewer, operator, admin)"
        ) from exc
    if len(digest) != 32:
        raise SystemExit(f"{where}: sha256 must be 64 hex digits")

    def restriction(key: str) -> frozenset[str] | None:
        value = row.get(key)
        return None if value is None else frozenset(str(v) for v in value)

    principal = Principal(name, role, restriction("namespaces"), restriction("providers"))
    return _Entry(digest, principal)
