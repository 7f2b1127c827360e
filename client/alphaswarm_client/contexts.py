"""Named connection contexts, kept in the user's config file.

``$XDG_CONFIG_HOME/alphaswarm/config.yaml`` (``~/.config/...`` when unset;
``ALPHASWARM_CONFIG`` names another file)::

    current_context: prod
    contexts:
      prod:
        target: controller.example.com:443
        ca_cert: /home/me/.config/alphaswarm/prod-ca.pem
        client_cert: /home/me/.config/alphaswarm/me.pem
        client_key: /home/me/.config/alphaswarm/me-key.pem
        token_command: [pass, show, alphaswarm/prod]   # or token_file: PATH
        namespace: shop
        provider: kubernetes

A context says where and how to connect; flags and the ``ALPHASWARM_*``
environment override each of its fields. The token is never stored in the
file unless asked for explicitly (``context set --store-token``): a context
names a file that holds it, or a command (an argv, run without a shell) that
prints it. The file is written with mode 0600, atomically.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
TOKEN_COMMAND_TIMEOUT = 30.0
"""Seconds a token command may take (a password manager may ask for a passphrase)."""
MAX_TOKEN_BYTES = 8192


class ContextError(Exception):
    """The config file or a context in it cannot be used; exit code 2."""


@dataclass
class Context:
    """Connection settings; an empty field leaves the default (or the flag) in force."""

    target: str = ""
    provider: str = ""
    namespace: str = ""
    tls: bool = False
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    tls_server_name: str = ""
    token_file: str = ""
    token_command: list[str] = field(default_factory=list)
    token: str = ""
    """Only when stored on purpose (``--store-token``); prefer a file or a command."""

    @classmethod
    def from_mapping(cls, name: str, data: Any) -> Context:
        if not isinstance(data, Mapping):
            raise ContextError(f"context {name!r}: expected a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ContextError(
                f"context {name!r}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "tls":
                if not isinstance(value, bool):
                    raise ContextError(f"context {name!r}: tls: expected true or false")
                values[key] = value
            elif key == "token_command":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ContextError(
                        f"context {name!r}: token_command: expected a list of arguments"
                    )
                values[key] = list(value)
            else:
                if not isinstance(value, str):
                    raise ContextError(f"context {name!r}: {key}: expected a string")
                values[key] = value
        context = cls(**values)
        if context.token_file and context.token_command:
            raise ContextError(f"context {name!r}: token_file and token_command exclude each other")
        return context

    def to_mapping(self) -> dict[str, Any]:
        """The fields that are set, for the file."""
        return {k: v for k, v in asdict(self).items() if v not in ("", [], False)}

    @property
    def auth(self) -> str:
        """How the token is obtained, for listings (never the token itself)."""
        if self.token_command:
            return "token-command"
        if self.token_file:
            return "token-file"
        if self.token:
            return "token (stored)"
        return "-"

    def read_token(self) -> str | None:
        """The bearer token from the file or the command; None when the context has none."""
        if self.token_file:
            try:
                raw = Path(self.token_file).expanduser().read_bytes()[: MAX_TOKEN_BYTES + 1]
            except OSError as error:
                raise ContextError(
                    f"cannot read token_file {self.token_file}: {error.strerror}"
                ) from None
            return _one_token(raw, f"token_file {self.token_file}")
        if self.token_command:
            try:
                done = subprocess.run(
                    self.token_command,
                    capture_output=True,
                    timeout=TOKEN_COMMAND_TIMEOUT,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise ContextError(f"token_command {self.token_command[0]!r}: {error}") from None
            if done.returncode != 0:
                raise ContextError(
                    f"token_command {self.token_command[0]!r} exited with {done.returncode}"
                )
            return _one_token(done.stdout[: MAX_TOKEN_BYTES + 1], "token_command's output")
        return self.token or None


def _one_token(raw: bytes, where: str) -> str:
    if len(raw) > MAX_TOKEN_BYTES:
        raise ContextError(f"{where}: longer than {MAX_TOKEN_BYTES} bytes")
    token = raw.decode("utf-8", "replace").strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ContextError(f"{where}: expected one token on one line")
    return token


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("ALPHASWARM_CONFIG"):
        return Path(env["ALPHASWARM_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "alphaswarm" / "config.yaml"


@dataclass
class ConfigFile:
    """The whole file: the contexts by name and the current one."""

    path: Path
    contexts: dict[str, Context] = field(default_factory=dict)
    current: str = ""

    @classmethod
    def load(cls, path: Path) -> ConfigFile:
        try:
            text = path.read_text(encoding="utf-8")
            check_private(path)
        except FileNotFoundError:
            return cls(path)
        except OSError as error:
            raise ContextError(f"cannot read {path}: {error.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ContextError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
        if not isinstance(data, Mapping):
            raise ContextError(f"{path}: expected a mapping with 'contexts'")
        unknown = sorted(set(map(str, data)) - {"contexts", "current_context"})
        if unknown:
            raise ContextError(f"{path}: unknown key(s) {', '.join(unknown)}")
        raw = data.get("contexts") or {}
        if not isinstance(raw, Mapping):
            raise ContextError(f"{path}: contexts: expected a mapping of name: settings")
        contexts = {}
        for name, settings in raw.items():
            check_name(str(name))
            contexts[str(name)] = Context.from_mapping(str(name), settings or {})
        current = data.get("current_context") or ""
        if not isinstance(current, str):
            raise ContextError(f"{path}: current_context: expected a name")
        return cls(path, contexts, current)

    def get(self, name: str) -> Context:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise ContextError(f"no context {name!r} in {self.path} (known: {known})") from None

    def save(self) -> None:
        data: dict[str, Any] = {}
        if self.current:
            data["current_context"] = self.current
        data["contexts"] = {name: c.to_mapping() for name, c in sorted(self.contexts.items())}
        text = yaml.safe_dump(data, sort_keys=False)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Atomic and private from the first byte: a stored token never sits in a 0644 file.
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".config.", text=True)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def check_private(path: Path) -> None:
    """Refuse a config file that someone else could have written: it names commands this
    CLI runs (token_command) and where it sends tokens (target), like ~/.ssh/config."""
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ContextError(
            f"{path} is writable by other users or not owned by you; fix it with: chmod go-w {path}"
        )


def check_name(name: str) -> str:
    if not CONTEXT_NAME.fullmatch(name):
        raise ContextError(
            f"context name {name[:64]!r}: 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
