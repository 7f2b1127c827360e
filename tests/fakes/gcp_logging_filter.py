"""The part of the Logging query language the Cloud Logging emulator evaluates.

Source: https://cloud.google.com/logging/docs/view/logging-query-language ([lql]) and
google/logging/v2/logging.proto ([proto]). Supported, exactly as the language defines it:

* comparisons ``FIELD OP "VALUE"`` with OP one of ``= != > < >= <=`` (the value quoted,
  with ``\\"`` and ``\\\\`` escapes) on ``logName``, ``resource.type``,
  ``resource.labels.KEY``, ``labels.KEY``, ``insertId``, ``textPayload``, ``severity``
  and ``timestamp`` (ordering operators on ``timestamp`` only, compared as instants;
  [lql] "timestamp values must be in RFC 3339 format");
* ``AND`` between comparisons, and parenthesised ``OR`` groups; [lql] "The Boolean
  operators AND, OR and NOT must be capitalized".

Anything else is INVALID_ARGUMENT: a malformed filter (an unterminated string, an
unbalanced parenthesis, a missing value, lowercase ``and``) as on the real service
("Unparseable filter"), and valid syntax this emulator does not evaluate (``:``, ``NOT``,
regular expressions, implicit AND) too, so a provider never gets an answer the real
service would have computed differently. [proto] ListLogEntriesRequest.filter: "The
maximum length of a filter is 20,000 characters."
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .gcp_common import invalid

MAX_FILTER_LENGTH = 20_000
_FIELD = re.compile(
    r"logName|resource\.type|resource\.labels\.[A-Za-z_][A-Za-z0-9_]*|"
    r"labels\.[A-Za-z_][A-Za-z0-9_./-]*|insertId|textPayload|severity|timestamp"
)
_TOKEN = re.compile(
    r'\s*(?:(?P<paren>[()])|(?P<op>!=|>=|<=|=|>|<)|(?P<string>"(?:[^"\\]|\\.)*")|'
    r"(?P<word>[A-Za-z_][A-Za-z0-9_.\-/]*))"
)

Accessor = Callable[[str], str | None]
"""The value of a field of one entry (None when the entry has no such field)."""


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: str
    instant: datetime | None = None

    def holds(self, get: Accessor) -> bool:
        actual = get(self.field)
        if actual is None:
            # [lql] a comparison on a field the entry lacks is false (!= included).
            return False
        if self.instant is not None:
            have = datetime.fromisoformat(actual)
            return {
                "=": have == self.instant,
                "!=": have != self.instant,
                ">": have > self.instant,
                "<": have < self.instant,
                ">=": have >= self.instant,
                "<=": have <= self.instant,
            }[self.op]
        return actual == self.value if self.op == "=" else actual != self.value


@dataclass(frozen=True)
class Query:
    """A conjunction of clauses; each clause is one comparison or an OR of several."""

    clauses: tuple[tuple[Comparison, ...], ...]

    def matches(self, get: Accessor) -> bool:
        return all(any(c.holds(get) for c in clause) for clause in self.clauses)

    def fields(self) -> set[str]:
        return {c.field for clause in self.clauses for c in clause}

    def restricted_to(self, prefixes: tuple[str, ...]) -> Query:
        """The clauses that only name fields with these prefixes (to prune early)."""
        return Query(
            tuple(
                clause
                for clause in self.clauses
                if all(c.field.startswith(prefixes) for c in clause)
            )
        )


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            near = text[position : position + 20]
            raise invalid(f"Unparseable filter: unexpected input at {position}: {near!r}")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


def parse(text: str) -> Query:
    """The filter as a Query; INVALID_ARGUMENT (see the module doc) when it is not one."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid(f"filter: longer than {MAX_FILTER_LENGTH} characters")
    if not text.strip():
        return Query(())
    tokens = _tokens(text)
    clauses: list[tuple[Comparison, ...]] = []
    index = 0

    def comparison() -> Comparison:
        nonlocal index
        if index + 3 > len(tokens):
            raise invalid("Unparseable filter: incomplete comparison")
        (fkind, field), (okind, op), (vkind, raw) = tokens[index : index + 3]
        if fkind != "word" or okind != "op":
            raise invalid(f"Unparseable filter: expected FIELD OP VALUE near {field!r}")
        if vkind != "string":
            raise invalid(f"filter: the value compared with {field} must be a quoted string")
        if not _FIELD.fullmatch(field):
            raise invalid(f"filter: field {field!r} is not evaluated by the emulator")
        index += 3
        value = _unquote(raw)
        if field == "timestamp":
            try:
                instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise invalid(f"filter: {value!r} is not an RFC 3339 timestamp") from None
            if instant.tzinfo is None:
                raise invalid(f"filter: timestamp {value!r} has no time zone")
            return Comparison(field, op, value, instant)
        if op not in ("=", "!="):
            raise invalid(f"filter: {op} on {field} is not evaluated by the emulator")
        return Comparison(field, op, value)

    while True:
        if index < len(tokens) and tokens[index] == ("paren", "("):
            index += 1
            group = [comparison()]
            while index < len(tokens) and tokens[index] == ("word", "OR"):
                index += 1
                group.append(comparison())
            if index >= len(tokens) or tokens[index] != ("paren", ")"):
                raise invalid("Unparseable filter: unbalanced parenthesis")
            index += 1
            clauses.append(tuple(group))
        else:
            clauses.append((comparison(),))
        if index == len(tokens):
            return Query(tuple(clauses))
        if tokens[index] != ("word", "AND"):
            raise invalid(
                f"Unparseable filter: expected AND, found {tokens[index][1]!r} (Boolean "
                "operators are capitalized; implicit AND is not evaluated by the emulator)"
            )
        index += 1
