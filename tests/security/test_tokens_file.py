"""A malformed tokens file stops the server with one line naming the file, the entry and
the field; it never widens a token, and never ends in a traceback.

Each case runs twice: against the loader, and through the real entry point
(``python -m alphaswarm_controller``) as an operator would meet it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from alphaswarm_controller.security.tokens import (
    MAX_FILE_BYTES,
    Role,
    TokensFileError,
    TokenStore,
    hash_token,
)

A = hash_token("token-a")
B = hash_token("token-b")


@dataclass(frozen=True)
class Case:
    id: str
    write: Callable[[Path], Path]
    """Creates the file (or not) under a directory; returns the path to configure."""
    expected: tuple[str, ...]
    """Fragments the one line must hold, besides the path."""


def text(body: str) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / "tokens.yaml"
        path.write_text(body)
        return path

    return write


def raw(body: bytes) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / "tokens.yaml"
        path.write_bytes(body)
        return path

    return write


def entry(name: str = "ci", digest: str = A, role: str = "operator", extra: str = "") -> str:
    return f"  - name: {name}\n    sha256: {digest}\n    role: {role}\n{extra}"


CASES = [
    Case(
        "namespaces-without-value",
        text("tokens:\n" + entry(extra="    namespaces:\n")),
        ("tokens[0] (name 'ci')", "field 'namespaces'", "non-empty list", "nothing"),
    ),
    Case(
        "namespaces-a-string",
        text("tokens:\n" + entry(extra="    namespaces: demo\n")),
        ("tokens[0] (name 'ci')", "field 'namespaces'", "the string 'demo'"),
    ),
    Case(
        "namespaces-a-number",
        text("tokens:\n" + entry(extra="    namespaces: 5\n")),
        ("tokens[0] (name 'ci')", "field 'namespaces'", "the number 5"),
    ),
    Case(
        "namespaces-empty-list",
        text("tokens:\n" + entry(extra="    namespaces: []\n")),
        ("tokens[0] (name 'ci')", "field 'namespaces'", "a list of 0"),
    ),
    Case(
        "namespaces-not-a-namespace",
        text("tokens:\n" + entry(extra="    namespaces: [demo, Team_A]\n")),
        ("tokens[0] (name 'ci')", "field 'namespaces[1]'", "'Team_A'"),
    ),
    Case(
        "namespaces-list-of-lists",
        text("tokens:\n" + entry(extra="    namespaces: [[demo]]\n")),
        ("tokens[0] (name 'ci')", "field 'namespaces[0]'", "must be a string"),
    ),
    Case(
        "providers-without-value",
        text("tokens:\n" + entry(extra="    providers:\n")),
        ("tokens[0] (name 'ci')", "field 'providers'"),
    ),
    Case(
        "providers-not-an-alias",
        text("tokens:\n" + entry(extra="    providers: [docker-compose]\n")),
        ("tokens[0] (name 'ci')", "field 'providers[0]'", "provider alias"),
    ),
    Case(
        "duplicate-sha256",
        text("tokens:\n" + entry("ops", role="admin") + entry("ci", role="viewer")),
        ("tokens[1] (name 'ci')", "field 'sha256'", "tokens[0] (name 'ops')"),
    ),
    Case(
        "duplicate-sha256-other-case",
        text("tokens:\n" + entry("ops") + entry("ci", digest=A.upper())),
        ("tokens[1] (name 'ci')", "field 'sha256'", "tokens[0] (name 'ops')"),
    ),
    Case(
        "duplicate-name",
        text("tokens:\n" + entry("ci") + entry("ci", digest=B)),
        ("tokens[1] (name 'ci')", "field 'name'", "tokens[0] (name 'ci')"),
    ),
    Case(
        "unknown-role",
        text("tokens:\n" + entry(role="superuser")),
        ("tokens[0] (name 'ci')", "field 'role'", "viewer, operator, admin", "'superuser'"),
    ),
    Case(
        "unknown-field",
        text("tokens:\n" + entry(extra="    namspaces: [demo]\n")),
        ("tokens[0] (name 'ci')", "field 'namspaces'", "unknown field"),
    ),
    Case(
        "missing-role",
        text("tokens:\n  - name: ci\n    sha256: " + A + "\n"),
        ("tokens[0] (name 'ci')", "field 'role'", "is required"),
    ),
    Case(
        "sha256-too-short",
        text("tokens:\n" + entry(digest=A[:-1])),
        ("tokens[0] (name 'ci')", "field 'sha256'", "64 hex digits"),
    ),
    Case(
        "sha256-not-hex",
        text("tokens:\n" + entry(digest="g" * 64)),
        ("tokens[0] (name 'ci')", "field 'sha256'", "64 hex digits"),
    ),
    Case(
        "sha256-a-number",
        text("tokens:\n" + entry(digest="1" * 64)),
        ("tokens[0] (name 'ci')", "field 'sha256'", "the number"),
    ),
    Case(
        "name-not-a-string",
        text("tokens:\n" + entry(name="yes")),
        ("tokens[0]:", "field 'name'", "the boolean True"),
    ),
    Case(
        "name-with-a-newline",
        text('tokens:\n  - name: "ci\\nroot"\n    sha256: ' + A + "\n    role: admin\n"),
        ("tokens[0]:", "field 'name'", "'ci\\nroot'"),
    ),
    Case(
        "key-given-twice",
        text("tokens:\n" + entry(role="viewer") + "    role: admin\n"),
        ("line 5", "appears twice"),
    ),
    Case("entry-not-a-mapping", text("tokens:\n  - ci\n"), ("tokens[0]:", "must be a mapping")),
    Case("empty-list", text("tokens: []\n"), ("'tokens' must be a non-empty list",)),
    Case("no-tokens-key", text("{}\n"), ("'tokens' must be a non-empty list", "nothing")),
    Case(
        "unknown-top-level-key",
        text("token:\n" + entry()),
        ("unknown top-level key(s) 'token'",),
    ),
    Case("top-level-a-list", text("- " + A + "\n"), ("top level must be a mapping", "a list")),
    Case("top-level-a-string", text("just a string\n"), ("top level must be a mapping",)),
    Case("empty-file", text(""), ("top level must be a mapping", "nothing")),
    Case(
        "huge-number",
        text("tokens:\n" + entry(extra="    namespaces: " + "9" * 5000 + "\n")),
        ("cannot be loaded", "4300 digits"),
    ),
    Case("deep-nesting", text("tokens: " + "[" * 100_000), ("cannot be loaded", "recursion")),
    Case("invalid-yaml", text("tokens: [\n  - {name: ci\n"), ("not valid YAML", "line ")),
    Case("not-utf-8", raw(b"tokens:\n  - name: \xff\xfe\n"), ("not UTF-8",)),
    Case("missing-file", lambda directory: directory / "absent.yaml", ("no such file",)),
    Case("a-directory", lambda directory: directory, ("is a directory",)),
]


def check_line(line: str, path: Path, case: Case) -> None:
    assert "\n" not in line.strip(), line
    assert f"tokens file {path}" in line, line
    for fragment in case.expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_loader_refuses_with_one_line(tmp_path: Path, case: Case) -> None:
    path = case.write(tmp_path)
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(path)
    check_line(str(caught.value), path, case)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_server_refuses_to_start_with_one_line(tmp_path: Path, case: Case) -> None:
    path = case.write(tmp_path)
    env = {
        **os.environ,
        "ALPHASWARM_CP_LISTEN": "127.0.0.1:0",
        "ALPHASWARM_CP_STATE_DIR": str(tmp_path / "state"),
        "ALPHASWARM_CP_TOKENS_FILE": str(path),
        "PYTHONUNBUFFERED": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "alphaswarm_controller"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "listening on" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alphaswarm-server: tokens file "), lines[0]
    check_line(lines[0], path, case)


def test_a_well_formed_file_keeps_every_restriction(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "tokens:\n"
        + entry("ci", role="Operator", extra="    namespaces: [demo, team-a]\n")
        + entry("ops", digest=B.upper(), role="admin", extra="    providers: [local, aws]\n")
    )
    store = TokenStore.load(path)
    ci = store.authenticate("token-a")
    ops = store.authenticate("token-b")
    assert ci is not None and ci.role is Role.OPERATOR
    assert ci.namespaces == frozenset({"demo", "team-a"}) and ci.providers is None
    assert ops is not None and ops.role is Role.ADMIN
    assert ops.providers == frozenset({"local", "aws"}) and ops.namespaces is None
    assert store.authenticate("token-c") is None


def _fifo(directory: Path) -> Path:
    path = directory / "tokens.fifo"
    os.mkfifo(path)
    return path


def _sized(size: int) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / "tokens.yaml"
        with path.open("wb") as file:
            file.truncate(size)  # sparse: the size is refused before a byte is read
        return path

    return write


EXACT = [
    ("missing-file", lambda directory: directory / "absent.yaml", "no such file"),
    ("a-directory", lambda directory: directory, "is a directory, not a file"),
    ("a-fifo", _fifo, "is not a regular file"),
    (
        "over-the-size-bound",
        _sized(MAX_FILE_BYTES + 1),
        f"is {MAX_FILE_BYTES + 1} bytes; a tokens file is at most {MAX_FILE_BYTES}",
    ),
    (
        "not-utf-8",
        raw(b"tokens:\n  - name: \xff\xfe\n"),
        "not UTF-8 text (invalid byte at offset 18)",
    ),
    (
        "yaml-with-a-mark",
        text("tokens: [\n  - {name: ci\n"),
        "line 2, column 3: not valid YAML: expected the node content, but found '-'",
    ),
    (
        "unknown-field-name-cut",
        text(f"tokens:\n  - {{name: ci, sha256: {A}, role: viewer, {'z' * 100}: 1}}\n"),
        f"tokens[0] (name 'ci'): field '{'z' * 64}': unknown field; "
        "an entry has name, sha256, role, namespaces, providers",
    ),
    (
        "namespace-not-a-name",
        text(f"tokens:\n  - {{name: ci, sha256: {A}, role: viewer, namespaces: [Team]}}\n"),
        "tokens[0] (name 'ci'): field 'namespaces[0]': the string 'Team' is not a namespace "
        "name (at most 63 of [a-z0-9-], a DNS-1123 label)",
    ),
]


@pytest.mark.parametrize(("write", "problem"), [c[1:] for c in EXACT], ids=[c[0] for c in EXACT])
def test_the_refusal_is_exactly_one_line_naming_the_problem(
    tmp_path: Path, write: Callable[[Path], Path], problem: str
) -> None:
    path = write(tmp_path)
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(path)
    assert str(caught.value) == f"tokens file {path}: {problem}"


def test_a_file_of_exactly_the_size_bound_is_read(tmp_path: Path) -> None:
    body = f"tokens:\n  - {{name: ci, sha256: {A}, role: viewer}}\n"
    path = tmp_path / "tokens.yaml"
    path.write_text(body + "#" * (MAX_FILE_BYTES - len(body) - 1) + "\n")
    assert path.stat().st_size == MAX_FILE_BYTES
    assert TokenStore.load(path).authenticate("token-a") is not None


def test_a_file_that_cannot_be_read_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside = tmp_path / "plain"
    beside.write_text("")
    inside = beside / "tokens.yaml"  # a path through a file: stat fails with ENOTDIR
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(inside)
    assert str(caught.value) == f"tokens file {inside}: cannot read it: Not a directory"

    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: []\n")
    for error, said in (
        (OSError(5, "Input/output error"), "Input/output error"),
        (OSError("gone"), "gone"),
    ):

        def fail(self: Path, error: OSError = error) -> bytes:
            raise error

        monkeypatch.setattr(Path, "read_bytes", fail)
        with pytest.raises(TokensFileError) as read:
            TokenStore.load(path)
        assert str(read.value) == f"tokens file {path}: cannot read it: {said}"
