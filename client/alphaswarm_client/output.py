"""Where the CLI's results go, and in which shape (``-o``).

Formats: the human tables (default), ``wide`` (more columns), ``json`` and
``yaml`` (the proto3 JSON mapping of the whole response message, the shape
grpcurl prints: camelCase field names, enums by name, 64-bit integers as
strings, every field present; streams print one compact JSON object per line,
or one YAML document per message), and ``name`` (``namespace/service`` per
line, for ``xargs``).

Terminal behaviour follows the usual conventions: colour and live redraws only
on a terminal, never with ``NO_COLOR`` set (https://no-color.org) or
``TERM=dumb``; tables fit the terminal's width, and are not cut when piped.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

#: Width of tables that go to a pipe or a file: nothing is cut or wrapped there.
UNLIMITED_WIDTH = 4096


class Format(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    NAME = "name"


def to_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping (what grpcurl prints), with every field present."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def to_json(message: Message | Mapping[str, Any], *, compact: bool = False) -> str:
    data = message if isinstance(message, Mapping) else to_dict(message)
    if compact:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(data, ensure_ascii=False, indent=2)


def to_yaml(message: Message | Mapping[str, Any]) -> str:
    data = message if isinstance(message, Mapping) else to_dict(message)
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True).rstrip("\n")


class Output:
    """Results on stdout (flushed per line, so pipes see each one), in ``format``."""

    def __init__(
        self,
        format: Format = Format.TABLE,
        *,
        stream: TextIO | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.format = format
        self.stream = stream if stream is not None else sys.stdout
        env = os.environ if env is None else env
        try:
            self.is_tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.is_tty = False
        dumb = env.get("TERM", "") in ("dumb", "unknown")
        self.color = self.is_tty and not dumb and not env.get("NO_COLOR")
        self.live = self.is_tty and not dumb
        """Whether views may redraw in place (cursor movement)."""
        self._columns = env.get("COLUMNS", "")

    @property
    def as_json(self) -> bool:
        return self.format is Format.JSON

    @property
    def structured(self) -> bool:
        """JSON or YAML: machine output, no human decoration."""
        return self.format in (Format.JSON, Format.YAML)

    @property
    def wide(self) -> bool:
        return self.format is Format.WIDE

    @property
    def width(self) -> int:
        """Columns tables may take: the terminal's, else $COLUMNS, else unlimited."""
        if self.is_tty:
            return shutil.get_terminal_size().columns
        if self._columns.isdigit() and int(self._columns) > 0:
            return int(self._columns)
        return UNLIMITED_WIDTH

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def result(
        self,
        message: Message,
        human: Callable[[], str],
        names: Callable[[], list[str]] | None = None,
    ) -> None:
        """One response: ``message`` as JSON/YAML, ``names()`` for ``-o name``, else
        ``human()`` (a table or fields; it reads ``self.wide`` and ``self.width``)."""
        if self.format is Format.JSON:
            self.line(to_json(message))
        elif self.format is Format.YAML:
            self.line(to_yaml(message))
        elif self.format is Format.NAME and names is not None:
            for name in names():
                self.line(name)
        else:
            self.line(human())

    def stream_message(self, message: Message) -> bool:
        """One message of a stream in JSON (a line) or YAML (a document); False when the
        format is a human one and the caller renders it."""
        if self.format is Format.JSON:
            self.line(to_json(message, compact=True))
        elif self.format is Format.YAML:
            self.line("---\n" + to_yaml(message))
        else:
            return False
        return True
