"""Replica output from the Container Instances logs API (Containers - List Logs), polled.

ACI answers a container's log as one text, ``{"content": ...}``: the last ``tail``
lines, or all it keeps up to 4 MB, each line stamped with its time when asked
(``timestamps=true``; the containerinstance OpenAPI document). It keeps the log of
the *current* container instance only: after a restart the earlier lines are gone.
There is no follow (the attach websocket is for a terminal, not for a service), so a
follow stream asks again every ``LOG_POLL_INTERVAL``, as ``az container logs
--follow`` does, and sends what is new:

* **Deduplication by timestamp and content.** Each container has a ``Cursor``: the
  newest timestamp sent and how many times each text was sent with exactly that
  timestamp. A later read sends the lines stamped after it, and those stamped with it
  that were not sent yet. Two identical lines with the same nanosecond stamp are kept
  apart by counting them. A restarted container's lines carry later stamps, so they
  are sent as new.
* **Bounded reads.** The first read of a replica asks for ``query.tail`` lines; later
  reads ask for ``FOLLOW_TAIL``. When a read comes back full and starts after the
  cursor (more lines were written between two polls than it holds), the container is
  read once more without ``tail`` (up to ACI's 4 MB), so nothing is skipped unless ACI
  itself no longer has it.
* **Replicas merged by time**, within each read round (each replica's lines in order).
  The service's groups are listed again at most every ``REPLICA_REFRESH`` seconds, so
  replicas that appear (scale-up, a config roll's replacements) are followed and
  those deleted are dropped. Stopped groups have no running container and are skipped.

ACI does not say which stream a line came from: entries are ``UNSPECIFIED``. Errors:
an unknown service is DeploymentNotFoundError before the first entry; an error of the
first round ends the call; later, with follow, a failing round is logged and retried
after a growing pause, or the Retry-After ARM asked for (at most ``MAX_BACKOFF``), so a
blip never ends a follow stream.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from alphaswarm_core.providers.models import LogEntry, LogQuery, LogStreamKind
from alphaswarm_core.providers.protocol import InfrastructureProviderError

from .aci import Replica
from .gateway import AciGateway

FOLLOW_TAIL = 1000
"""Lines asked for per container by each follow poll after the first read."""
REPLICA_REFRESH = 5.0
"""Seconds between two listings of the service's groups while following (at least one
poll interval)."""
MAX_BACKOFF = 30.0
"""The longest pause after failing rounds of a follow stream."""

log = logging.getLogger(__name__)

# RFC 3339 as container runtimes stamp lines: fractions of up to 9 digits, Z or an offset.
_STAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})(?: |$)"
)


@dataclass(frozen=True, slots=True)
class Line:
    time: datetime
    text: str


def _stamp_time(match: re.Match[str]) -> datetime | None:
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]  # datetime keeps microseconds
    zone = match["zone"]
    try:
        base = datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}")
    except ValueError:
        return None
    if zone == "Z":
        return base.replace(tzinfo=UTC)
    sign = 1 if zone[0] == "+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return base.replace(tzinfo=timezone(sign * offset)).astimezone(UTC)


def parse_content(content: str, fallback: datetime) -> list[Line]:
    """The lines of a log text read with ``timestamps=true``, oldest first.

    A line without a stamp (none is expected) takes the time of the line before it;
    leading ones that of the first stamped line, or ``fallback`` when none is.
    """
    pieces = content.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()  # the text ends with a newline
    parsed: list[tuple[datetime | None, str]] = []
    for raw in pieces:
        piece = raw.removesuffix("\r")
        match = _STAMP.match(piece)
        when = _stamp_time(match) if match else None
        parsed.append((when, piece[match.end() :] if match and when else piece))
    first = next((when for when, _ in parsed if when is not None), fallback)
    lines: list[Line] = []
    previous = first
    for when, text in parsed:
        previous = when or previous
        lines.append(Line(previous, text))
    return lines


@dataclass
class Cursor:
    """How far one container's log has been sent."""

    time: datetime | None = None
    """The newest timestamp sent."""
    at_time: Counter[str] = field(default_factory=Counter)
    """How many times each text was sent stamped exactly ``time``."""

    def fresh(self, lines: Sequence[Line]) -> list[Line]:
        """The lines of a read not sent yet; the cursor moves past them."""
        if not lines:
            return []
        sent = Counter(self.at_time)
        new: list[Line] = []
        for line in lines:
            if self.time is not None:
                if line.time < self.time:
                    continue
                if line.time == self.time and sent[line.text] > 0:
                    sent[line.text] -= 1
                    continue
            new.append(line)
        newest = max(line.time for line in lines)
        if self.time is None or newest > self.time:
            self.time = newest
            self.at_time = Counter(line.text for line in lines if line.time == newest)
        else:
            self.at_time += Counter(line.text for line in new if line.time == self.time)
        return new

    def gap_before(self, lines: Sequence[Line]) -> bool:
        """Whether a read may have missed lines: it starts after what was sent."""
        return self.time is not None and bool(lines) and lines[0].time > self.time


@dataclass
class _Target:
    """One container of one replica, and how far its log has been sent."""

    replica: Replica
    container: str
    cursor: Cursor = field(default_factory=Cursor)
    tail: int = FOLLOW_TAIL
    """How many lines its next read asks for."""


class LogFollower:
    """The state of one StreamLogs call on ACI: which containers it reads, their cursors."""

    def __init__(
        self,
        gateway: AciGateway,
        list_replicas: Callable[[], Awaitable[list[Replica]]],
        query: LogQuery,
        interval: float,
    ) -> None:
        self._gateway = gateway
        self._list = list_replicas
        self._query = query
        self._interval = interval
        self._targets: dict[tuple[str, str], _Target] = {}

    def _track(self, replicas: Sequence[Replica], first_tail: int) -> None:
        """Follow the running containers of ``replicas`` (matching the instance filter);
        forget those no longer listed."""
        wanted: dict[tuple[str, str], Replica] = {}
        for replica in replicas:
            if replica.stopped:
                continue
            if self._query.instance_id and replica.instance_id != self._query.instance_id:
                continue
            for container in replica.group.containers or []:
                if container.name:
                    wanted[(replica.instance_id, container.name)] = replica
        self._targets = {
            key: self._targets.get(key) or _Target(replica, key[1], tail=first_tail)
            for key, replica in wanted.items()
        }

    async def _read(self, target: _Target) -> list[LogEntry]:
        name = target.replica.name
        tail = target.tail
        content = await self._gateway.container_log(name, target.container, tail)
        if content is None:
            return []  # not started yet, or gone: the next listing tells
        now = datetime.now(UTC)
        lines = parse_content(content, now)
        if len(lines) >= tail and target.cursor.gap_before(lines):
            everything = await self._gateway.container_log(name, target.container, None)
            if everything is not None:
                lines = parse_content(everything, now)
        target.tail = FOLLOW_TAIL
        instance = target.replica.instance_id
        return [
            entry
            for line in target.cursor.fresh(lines)
            if self._query.wants(
                entry := LogEntry.bounded(instance, line.time, line.text, LogStreamKind.UNSPECIFIED)
            )
        ]

    async def _round(self) -> tuple[list[LogEntry], BaseException | None]:
        """One read of every followed container, merged by time (stable: each replica's
        lines stay in order), and the first error other than a missing log. The lines of
        the containers read are kept even when another one failed: their cursors moved."""
        batches: list[list[LogEntry]] = []

        async def read(target: _Target) -> None:
            batches.append(await self._read(target))

        outcomes = await self._gateway.bounded(list(self._targets.values()), read)
        error = next((error for _, error in outcomes if error is not None), None)
        merged = sorted((entry for batch in batches for entry in batch), key=lambda e: e.time)
        return merged, error

    async def entries(self, replicas: list[Replica]) -> AsyncGenerator[LogEntry, None]:
        """The retained lines (``query.tail`` per replica), then with ``follow`` new ones."""
        self._track(replicas, self._query.tail)
        batch, error = await self._round()
        if error is not None:
            raise error
        for entry in batch:
            yield entry
        if not self._query.follow:
            return
        for target in self._targets.values():
            target.tail = FOLLOW_TAIL  # what a replica writes from now on is new
        refresh = max(REPLICA_REFRESH, self._interval)
        listed_at = time.monotonic()
        failures = 0
        asked = 0.0  # the Retry-After of the last throttled round
        while True:
            pause = min(MAX_BACKOFF, max(self._interval * 2**failures, asked))
            await asyncio.sleep(pause)
            if time.monotonic() - listed_at >= refresh:
                listed_at = time.monotonic()
                try:
                    # Replicas found from now on wrote every line after the stream began.
                    self._track(await self._list(), FOLLOW_TAIL)
                except InfrastructureProviderError as failed:
                    log.warning("listing container groups for logs failed (%s)", failed)
            batch, error = await self._round()
            for entry in batch:
                yield entry
            if error is None:
                failures, asked = 0, 0.0
            elif isinstance(error, InfrastructureProviderError):
                failures += 1
                asked = getattr(error, "retry_after_seconds", 0.0)
                log.warning("reading Container Instances logs failed (%s); retrying", error)
            else:
                raise error
