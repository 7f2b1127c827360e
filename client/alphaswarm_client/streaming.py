"""The CLI's streaming commands: logs, metrics --follow, watch.

On a terminal (not ``TERM=dumb``) metrics and watch redraw one view in place
with ``rich.live``; piped, they print one line per message (with a header
first), and with ``-o json`` one JSON object per line. Watches reconnect when
the server goes away or restarts (UNAVAILABLE, e.g. SERVER_SHUTTING_DOWN),
waiting with exponential backoff and jitter, at least as long as the server's
RetryInfo asks, and give up after ``RECONNECT_GIVE_UP_SECONDS`` without one
successful message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import shutil
import sys
import zlib
from collections.abc import AsyncGenerator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import render
from alphaswarm_client.client import AlphaswarmClient
from alphaswarm_client.errors import AlphaswarmError
from alphaswarm_client.exits import UsageError
from alphaswarm_client.output import Output

T = TypeVar("T")

RECONNECT_INITIAL_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
RECONNECT_GIVE_UP_SECONDS = 120.0


class Reconnected:
    """Marks, in a reconnecting stream, that a new call begins (a new snapshot follows)."""


RECONNECTED = Reconnected()


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


async def reconnecting(
    open_stream: Callable[[], AsyncGenerator[T, None]],
    what: str,
    *,
    note: Callable[[str], None] = _note,
) -> AsyncGenerator[T | Reconnected, None]:
    """The items of ``open_stream()``, re-opened after UNAVAILABLE; other errors raise."""
    loop = asyncio.get_running_loop()
    attempt = 0
    failing_since: float | None = None
    while True:
        stream = open_stream()
        try:
            async with contextlib.aclosing(stream):
                async for item in stream:
                    attempt, failing_since = 0, None
                    yield item
            return
        except AlphaswarmError as error:
            if error.code is not grpc.StatusCode.UNAVAILABLE:
                raise
            now = loop.time()
            failing_since = now if failing_since is None else failing_since
            attempt += 1
            ceiling = min(RECONNECT_MAX_SECONDS, RECONNECT_INITIAL_SECONDS * 2 ** (attempt - 1))
            wait = max(random.uniform(ceiling / 2, ceiling), error.retry_delay or 0.0)
            if now + wait - failing_since > RECONNECT_GIVE_UP_SECONDS:
                raise
            note(f"{what}: reconnecting in {wait:.1f}s ({error.one_line()})")
            await asyncio.sleep(wait)
            yield RECONNECTED


# -- logs -----------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``1h30m``, ``2d``, ``45s`` ago, or an RFC 3339 time with a zone."""
    match = _DURATION.fullmatch(text)
    if text and match and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        return (now or datetime.now(UTC)) - delta
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text[:64]!r}: expected a duration (10m, 1h30m, 2d) or an RFC 3339 time"
        ) from None
    if moment.tzinfo is None:
        raise UsageError(f"--since {text[:64]!r}: give a zone (Z or +01:00)")
    return moment


#: ANSI foreground colours for replica prefixes (no black/white: unreadable on some themes).
_PALETTE = (
    "\x1b[36m",
    "\x1b[33m",
    "\x1b[32m",
    "\x1b[35m",
    "\x1b[34m",
    "\x1b[96m",
    "\x1b[93m",
    "\x1b[92m",
    "\x1b[95m",
    "\x1b[94m",
)
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"


def colour_of(instance_id: str) -> str:
    """The same colour for the same replica, every run."""
    return _PALETTE[zlib.crc32(instance_id.encode()) % len(_PALETTE)]


class LogPrinter:
    """``instance | line`` (stderr: ``instance ! line``), prefixes padded to the widest so
    far; on a terminal the prefix is coloured per replica and control characters escaped."""

    def __init__(self, out: Output, *, timestamps: bool) -> None:
        self._out = out
        self._timestamps = timestamps
        self._width = 0

    def line(self, entry: types_pb2.LogEntry) -> str:
        instance, text = entry.instance_id, entry.text
        if self._out.is_tty:
            instance, text = render.escaped(instance), render.escaped(text)
        self._width = max(self._width, len(instance))
        mark = "!" if entry.stream == types_pb2.LOG_STREAM_STDERR else "|"
        prefix = f"{instance:<{self._width}} {mark}"
        suffix = " [truncated]" if entry.truncated else ""
        stamp = ""
        if self._timestamps:
            moment = datetime.fromtimestamp(entry.time.seconds, UTC).replace(
                microsecond=entry.time.nanos // 1000
            )
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + " "
        if not self._out.color:
            return f"{stamp}{prefix} {text}{suffix}"
        colour = colour_of(entry.instance_id)
        mark_colour = _RED if mark == "!" else colour
        return (
            f"{_DIM}{stamp}{_RESET}{colour}{prefix[:-1]}{_RESET}{mark_colour}{mark}{_RESET} "
            f"{text}{_DIM}{suffix}{_RESET}"
        )


async def cmd_logs(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    since = parse_since(args.since) if args.since else None
    printer = LogPrinter(out, timestamps=args.timestamps)
    seen = 0
    stream = client.stream_logs(
        args.service_id,
        namespace=args.namespace,
        follow=args.follow,
        tail_lines=args.tail,
        since=since,
        instance_id=args.instance,
    )
    async with contextlib.aclosing(stream):
        async for entry in stream:
            if not out.stream_message(pb.StreamLogsResponse(entry=entry)):
                out.line(printer.line(entry))
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0


# -- live views -------------------------------------------------------------------------------


@contextlib.contextmanager
def live_view(out: Output) -> Iterator[Callable[[str | RenderableType], None]]:
    """``show(view)`` redraws ``view`` (text, or a rich renderable) in place on the
    terminal (rich.live)."""
    console = Console(
        file=out.stream,
        force_terminal=True,
        color_system="standard" if out.color else None,
        highlight=False,
        markup=False,
        emoji=False,
    )
    with Live(
        Text(""),
        console=console,
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=False,
        vertical_overflow="ellipsis",
    ) as live:

        def show(view: str | RenderableType) -> None:
            live.update(Text(view) if isinstance(view, str) else view, refresh=True)

        yield show


async def cmd_metrics(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    # One-shot: the deadline covers the wait for the first sample, which may take an interval.
    timeout = None if args.follow else args.timeout + args.interval
    limit = args.count if args.follow else 1
    title = f"metrics of {args.namespace or 'default'}/{args.service_id} every {args.interval:g}s"
    stream = client.stream_metrics(
        args.service_id, namespace=args.namespace, interval=args.interval, timeout=timeout
    )
    seen = 0
    live = args.follow and out.live and not out.structured
    history: list[types_pb2.MetricSample] = []
    with live_view(out) if live else contextlib.nullcontext() as show:
        async with contextlib.aclosing(stream):
            async for sample in stream:
                seen += 1
                if out.stream_message(pb.StreamMetricsResponse(sample=sample)):
                    pass
                elif show is not None:
                    rows = max(1, min(10, shutil.get_terminal_size().lines // 3))
                    history = [*history, sample][-rows:]
                    text = f"{title} (Ctrl-C to stop)\n\n"
                    text += render.metrics_table(history, wide=False, width=out.width)
                    if out.wide:
                        text += "\n\n" + render.metrics_replicas(sample, width=out.width)
                    show(text)
                elif not args.follow:
                    text = render.metrics_table([sample], wide=out.wide, width=out.width)
                    if out.wide and sample.extra:
                        text += "\n\n" + render.metrics_replicas(sample, width=out.width)
                    out.line(text.rstrip())
                else:
                    if seen == 1:
                        out.line(render.metrics_header_line())
                    out.line(render.metrics_line(sample, wide=out.wide))
                if limit is not None and seen >= limit:
                    break
    return 0


async def cmd_watch(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    if args.service_id:
        return await _watch_one(client, args, out)
    return await _watch_namespace(client, args, out)


async def _watch_one(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    seen = 0
    live = out.live and not out.structured
    items = reconnecting(
        lambda: client.watch(args.service_id, namespace=args.namespace),
        f"watch {args.service_id}",
    )
    with live_view(out) if live else contextlib.nullcontext() as show:
        async with contextlib.aclosing(items):
            async for status in items:
                if isinstance(status, Reconnected):
                    continue
                seen += 1
                if out.stream_message(pb.WatchDeploymentResponse(status=status)):
                    pass
                elif show is not None:
                    show(
                        f"watching {status.namespace}/{status.service_id} (Ctrl-C to stop)\n\n"
                        + render.status(status, wide=out.wide, width=out.width)
                    )
                else:
                    if seen == 1:
                        out.line(render.watch_header_line())
                    out.line(render.watch_line(status))
                if args.count is not None and seen >= args.count:
                    break
    return 0


async def _watch_namespace(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    namespace = "" if args.all_namespaces else args.namespace
    scope = namespace or "every namespace"
    table: dict[tuple[str, str], types_pb2.DeploymentStatus] = {}
    fresh: dict[tuple[str, str], types_pb2.DeploymentStatus] | None = {}
    """The snapshot being received (after a (re)connect), until its marker."""
    seen = 0
    live = out.live and not out.structured
    events = reconnecting(lambda: client.watch_deployments(namespace=namespace), f"watch {scope}")
    header = False
    with live_view(out) if live else contextlib.nullcontext() as show:
        async with contextlib.aclosing(events):
            if show is not None:
                show(f"watching {scope}: loading...")
            async for event in events:
                if isinstance(event, Reconnected):
                    fresh = {}
                    continue
                seen += 1
                key = (event.status.namespace, event.status.service_id)
                if event.event == types_pb2.DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE:
                    table, fresh = fresh or {}, None
                elif fresh is not None:
                    fresh[key] = event.status
                elif event.event == types_pb2.DEPLOYMENT_EVENT_DELETED:
                    table.pop(key, None)
                else:
                    table[key] = event.status
                if out.stream_message(event):
                    pass
                elif show is not None:
                    if fresh is None:
                        rows = [table[k] for k in sorted(table)]
                        show(
                            f"watching {scope} (Ctrl-C to stop)\n\n"
                            + render.deployments(rows, wide=out.wide, width=out.width)
                        )
                elif event.event != types_pb2.DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE:
                    if not header:
                        out.line(render.event_header_line())
                        header = True
                    out.line(render.event_line(event))
                if args.count is not None and seen >= args.count:
                    break
    return 0
