"""Log set-up (JSON or text) and the per-call request id that every log line carries.

The request id is part of the call context (``alphaswarm_core.call.current_call``)
set up for the whole call, so any logger used while serving it (the servicer,
providers, the error mapping, ``alphaswarm.audit``) gets it without passing it
around: ``RequestIdFilter`` sits on the output handler and copies it onto each record.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from alphaswarm_core.call import current_call

#: Metadata key of the request id, in the caller's request and in the response headers.
REQUEST_ID_KEY = "x-request-id"

# What a caller may send as its own id: the characters of UUIDs, hex trace ids and
# vendor ids such as AWS's "Root=1-...", bounded, so that nothing a caller chooses
# can break a log line (no spaces, quotes, newlines or control characters).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=/+@-]{1,128}")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"

#: A log message longer than this is cut (with a note of how much): no caller-chosen
#: value, however large, is written in full.
MAX_MESSAGE_CHARS = 8192
#: How much of one caller-supplied value a log line shows (``clip_for_log``).
MAX_VALUE_CHARS = 256
#: Continuation lines of a text record (tracebacks) start with this, so that no line
#: an exception message carries can pass for a record of its own.
CONTINUATION = "  | "

# What would end or disguise a text log line: C0/C1 controls (newline, carriage
# return, escape sequences), Unicode line and paragraph separators, and the
# invisible format characters (bidi overrides, zero-width) that reorder or hide text.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
LOG_FORMATS = ("text", "json")

#: Set by tracing when enabled: returns (trace_id, span_id) of the current span, or None.
trace_ids: Callable[[], tuple[str, str] | None] | None = None

AUDIT_LOGGER = "alphaswarm.audit"

_new_ids = random.Random()  # seeded from os.urandom
"""Request ids correlate log lines, and callers may choose their own: they need to be
unique, not secret, so a read of os.urandom per call (uuid4) would buy nothing."""


def accept_request_id(sent: str | bytes | None) -> str:
    """The caller's id when it is sane, else a new one (32 hex digits)."""
    if isinstance(sent, bytes):
        sent = sent.decode("ascii", "replace")
    if sent and _SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return f"{_new_ids.getrandbits(128):032x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: control and invisible characters as ``\\n``, ``\\x1b``,
    ``\\u2028``..."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"


def clip_for_log(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """A caller-supplied ``value`` shortened for a log line (escaping is the formatter's)."""
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _clip_message(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    cut = len(message) - MAX_MESSAGE_CHARS
    return f"{message[:MAX_MESSAGE_CHARS]}... [{cut} more characters not logged]"


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one record per line whatever the message holds.

    The message is clipped and its control characters escaped; a traceback keeps
    its lines, each prefixed with ``CONTINUATION`` (and escaped), so that a line
    of the log starting with a timestamp is always a record the server wrote.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(_clip_message(record.getMessage()))
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        blocks = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            for part in block.splitlines():
                line += "\n" + CONTINUATION + escape_controls(part)
        return line


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and, with tracing, ``trace_id``/``span_id``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call.get()
        rid = call.request_id if call is not None else ""
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        ids = trace_ids() if trace_ids is not None else None
        record.trace_id, record.span_id = ids if ids else ("", "")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, exception.

    Audit records (whose message is itself a JSON object) have their fields
    merged into the line, so log pipelines query ``principal`` or ``outcome``
    directly instead of parsing a string inside a string.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _clip_message(record.getMessage()),
        }
        for key in ("request_id", "trace_id", "span_id"):
            value = getattr(record, key, "")
            if value:
                line[key] = value
        if record.name == AUDIT_LOGGER:
            _merge_audit(line)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def _merge_audit(line: dict[str, Any]) -> None:
    try:
        fields = json.loads(line["message"])
    except ValueError:
        return
    if isinstance(fields, dict):
        for key, value in fields.items():
            line.setdefault(key, value)


def _utc_iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to ``stream`` (stderr) in ``log_format``; returns the handler."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
