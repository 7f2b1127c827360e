"""Bearer tokens with roles, loaded from a file that holds only their SHA-256 hashes.

File format (YAML or JSON)::

    tokens:
      - name: ci-deployer          # shown in audit lines, never the token
        sha256: 9f86d08...         # `alphaswarm-server hash-token` prints it
        role: operator             # viewer | operator | admin
        namespaces: [team-a]       # optional restriction (leave out: every namespace)
        providers: [kubernetes]    # optional restriction (leave out: every provider)

Tokens are random strings of high entropy, so a plain SHA-256 (not a slow
password hash) is the right digest; a presented token's digest is compared
with every entry in constant time.

The file is schema-checked as a whole before the server serves anything: a
mistake in it must stop the server with one line naming the file, the entry and
the field, never silently widen a token (``namespaces:`` with no value used to
mean "every namespace", ``namespaces: demo`` the set {d, e, m, o}) or let a
later entry with the same hash override an earlier one.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaswarm_core.call import Caller
from alphaswarm_core.providers.models import ALIAS_RULE, MAX_NAME_LENGTH, is_alias, is_name

MAX_FILE_BYTES = 1024 * 1024
"""A tokens file is a few lines per caller; anything larger is a mistake."""
MAX_TOKEN_NAME_LENGTH = 64
ENTRY_FIELDS = ("name", "sha256", "role", "namespaces", "providers")
REQUIRED_FIELDS = ("name", "sha256", "role")

_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class Role(enum.IntEnum):
    """The numbers of ``alphaswarm.provider.v1.Role``."""

    VIEWER = 1
    """List*, Get*, CheckHealth, StreamMetrics, WatchDeployment."""
    OPERATOR = 2
    """Viewer, plus StartDeployment, ScaleDeployment, StopDeployment, ApplyConfig."""
    ADMIN = 3
    """Everything."""


ROLE_NAMES = tuple(role.name.lower() for role in Role)

Principal = Caller
"""A token's holder: name, role and restrictions (the call context's ``Caller``)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "asw_" + secrets.token_urlsafe(32)


class TokensFileError(Exception):
    """The tokens file cannot be used; ``str()`` is one line naming the file, the
    entry (index and name) and the field."""


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class TokenStore:
    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        """Read and check ``path``; ``TokensFileError`` says what is wrong, in one line."""
        return cls(_parse(path, _read(path)))

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:  # no early exit: the time taken says nothing
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found


# -- reading ------------------------------------------------------------------------------------


def _read(path: Path) -> Any:
    def fail(problem: str) -> TokensFileError:
        return TokensFileError(f"tokens file {path}: {problem}")

    try:
        info = path.stat()
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as exc:
        raise fail(f"cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise fail("is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise fail(f"is {info.st_size} bytes; a tokens file is at most {MAX_FILE_BYTES}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    from . import strict_yaml  # here: a server without a tokens file never imports PyYAML

    try:
        return strict_yaml.load(text)
    except strict_yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = _one_line(str(exc.problem or exc.context or ""))
        raise fail(f"{where}not valid YAML: {problem}") from None
    except strict_yaml.YAMLError as exc:
        raise fail(f"not valid YAML: {_one_line(str(exc))}") from None
    except (ValueError, RecursionError) as exc:
        # Valid YAML that Python cannot hold: a number past 4300 digits, deep nesting.
        raise fail(f"cannot be loaded: {_one_line(str(exc) or type(exc).__name__)}") from None


# -- checking -----------------------------------------------------------------------------------


def _parse(path: Path, document: Any) -> list[_Entry]:
    prefix = f"tokens file {path}"
    if not isinstance(document, Mapping):
        raise TokensFileError(
            f"{prefix}: the top level must be a mapping with a 'tokens' list, not {_kind(document)}"
        )
    unknown = sorted(str(key) for key in document if key != "tokens")
    if unknown:
        raise TokensFileError(
            f"{prefix}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            "only 'tokens' is allowed"
        )
    rows = document.get("tokens")
    if not isinstance(rows, list) or not rows:
        raise TokensFileError(
            f"{prefix}: 'tokens' must be a non-empty list of entries, not {_kind(rows)}"
        )
    entries: list[_Entry] = []
    by_digest: dict[bytes, str] = {}
    by_name: dict[str, str] = {}
    for index, row in enumerate(rows):
        entry = _entry(prefix, index, row)
        where = _where(index, entry.principal.name)
        earlier = by_digest.setdefault(entry.digest, where)
        if earlier != where:
            raise TokensFileError(
                f"{prefix}: {where}: field 'sha256': the same token hash as {earlier}; "
                "each token must appear once"
            )
        earlier = by_name.setdefault(entry.principal.name, where)
        if earlier != where:
            raise TokensFileError(
                f"{prefix}: {where}: field 'name': the same name as {earlier}; "
                "names must be unique (audit lines identify callers by them)"
            )
        entries.append(entry)
    return entries


def _entry(prefix: str, index: int, row: Any) -> _Entry:
    name = row.get("name") if isinstance(row, Mapping) else None
    shown = name if isinstance(name, str) and _is_token_name(name) else None
    where = f"{prefix}: {_where(index, shown)}"

    def fail(field: str, problem: str) -> TokensFileError:
        return TokensFileError(f"{where}: field {field!r}: {problem}")

    if not isinstance(row, Mapping):
        raise TokensFileError(f"{where}: an entry must be a mapping, not {_kind(row)}")
    unknown = sorted(str(key) for key in row if key not in ENTRY_FIELDS)
    if unknown:
        raise fail(unknown[0][:64], f"unknown field; an entry has {', '.join(ENTRY_FIELDS)}")
    for required in REQUIRED_FIELDS:
        if required not in row:
            raise fail(required, "is required")
    if not isinstance(name, str) or not _is_token_name(name):
        raise fail(
            "name",
            f"must be 1-{MAX_TOKEN_NAME_LENGTH} of [A-Za-z0-9_.@:-], starting with a letter "
            f"or digit, not {_kind(name)}",
        )
    digest = row["sha256"]
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise fail(
            "sha256",
            f"must be 64 hex digits (the output of `alphaswarm-server hash-token`), "
            f"not {_kind(digest)}",
        )
    role = row["role"]
    if not isinstance(role, str) or role.lower() not in ROLE_NAMES:
        raise fail("role", f"must be one of {', '.join(ROLE_NAMES)}, not {_kind(role)}")
    principal = Principal(
        name,
        Role[role.upper()],
        _restriction(row, "namespaces", _namespace_problem, fail),
        _restriction(row, "providers", _alias_problem, fail),
    )
    return _Entry(bytes.fromhex(digest), principal)


def _restriction(
    row: Mapping[Any, Any],
    field: str,
    problem_of: Callable[[str], str | None],
    fail: Callable[[str, str], TokensFileError],
) -> frozenset[str] | None:
    """Absent: no restriction. Present: a non-empty list of valid names, nothing else."""
    if field not in row:
        return None
    value = row[field]
    rule = f"must be a non-empty list such as [a, b] (leave '{field}' out to allow every one)"
    if not isinstance(value, list) or not value:
        raise fail(field, f"{rule}, not {_kind(value)}")
    for position, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"{field}[{position}]", f"must be a string, not {_kind(item)}")
        problem = problem_of(item)
        if problem is not None:
            raise fail(f"{field}[{position}]", f"{_kind(item)} {problem}")
    return frozenset(value)


def _namespace_problem(value: str) -> str | None:
    if is_name(value):
        return None
    return f"is not a namespace name (at most {MAX_NAME_LENGTH} of [a-z0-9-], a DNS-1123 label)"


def _alias_problem(value: str) -> str | None:
    return None if is_alias(value) else f"is not a provider alias ({ALIAS_RULE})"


def _is_token_name(value: str) -> bool:
    return len(value) <= MAX_TOKEN_NAME_LENGTH and _TOKEN_NAME.fullmatch(value) is not None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(index: int, name: str | None) -> str:
    return f"tokens[{index}] (name {name!r})" if name else f"tokens[{index}]"


def _kind(value: Any) -> str:
    """What was found, for messages: short, on one line."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {text!r}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, int):
        # str() of an int past 4300 digits raises; the file may hold one.
        digits = int(value.bit_length() * 0.30103) + 1
        return f"the number {value}" if digits <= 80 else f"a number of about {digits} digits"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"
