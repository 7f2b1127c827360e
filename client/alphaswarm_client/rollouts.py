"""Following a change to its end, showing a plan, and the ``rollout`` commands.

``--wait`` and ``rollout status`` follow the service with WatchDeployment
``until_rollout_done``: the server ends the stream once the rollout of the desired
revision SUCCEEDED or FAILED (a backend failure, or no progress for the spec's
progress deadline), so the wait ends without a deadline of its own; ``--wait-timeout``
adds one. On a terminal the view is redrawn in place (a bar of ready replicas, the
rollout, one row per replica); piped, one line per change of the status; with ``-o
json``/``yaml`` each status as a WatchDeploymentResponse. Exit codes: 0 SUCCEEDED,
4 FAILED (reason and message on stderr), 3 still in progress when the wait ended.

``--dry-run`` asks the server for the plan of a change (``validate_only``): the
field-level diff (secret values masked by the server), what the replicas would go
through, and the revision it was computed against, to pass as ``--expected-revision``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable

from google.protobuf.message import Message
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import render
from alphaswarm_client.client import AlphaswarmClient
from alphaswarm_client.errors import Unimplemented
from alphaswarm_client.exits import (
    EXIT_OUTCOME_UNKNOWN,
    EXIT_ROLLOUT_FAILED,
    EXIT_RPC_ERROR,
    UsageError,
)
from alphaswarm_client.output import Format, Output
from alphaswarm_client.streaming import Reconnected, live_view, reconnecting

MAX_CHANGE_CAUSE_LENGTH = 1024
"""The server's limit (alphaswarm_core.providers.models.MAX_CHANGE_CAUSE_LENGTH)."""
STALE_VIEW_ATTEMPTS = 20
STALE_VIEW_PAUSE_SECONDS = 0.5
"""A backend read back before it shows a change just made (an eventually consistent
API) ends the watch on the previous rollout: it is re-opened, at most this often."""
BAR_WIDTH = 30

_DONE = (types_pb2.ROLLOUT_STATE_SUCCEEDED, types_pb2.ROLLOUT_STATE_FAILED)


def _error_line(text: str) -> None:
    sys.stderr.write("error: " + " ".join(text.split()) + "\n")
    sys.stderr.flush()


def change_cause(text: str) -> str:
    """``--change-cause``: printable, at most the server's bound (checked before any call)."""
    if len(text) > MAX_CHANGE_CAUSE_LENGTH:
        raise UsageError(f"--change-cause: at most {MAX_CHANGE_CAUSE_LENGTH} characters")
    if not text.isprintable():
        raise UsageError("--change-cause: printable characters only (no newline or control)")
    return text


def check_change_flags(args: argparse.Namespace) -> None:
    """The flags of a change that do not go together."""
    if getattr(args, "dry_run", False) and getattr(args, "wait", False):
        raise UsageError("--dry-run changes nothing, so there is nothing to --wait for")
    if getattr(args, "wait_timeout", None) is not None and not getattr(args, "wait", True):
        raise UsageError("--wait-timeout goes with --wait")
    change_cause(getattr(args, "change_cause", "") or "")


# -- plans ----------------------------------------------------------------------------------


def show_plan(out: Output, response: Message, plan: types_pb2.Plan, service: str) -> int:
    """A dry run's answer: the response as JSON/YAML, else the plan as a diff."""
    if out.format is Format.NAME:
        out.line(render.escaped(service))
        return 0
    if out.structured:
        out.result(response, lambda: "")
        return 0
    text = render.plan(plan, service)
    if plan.action != types_pb2.PLAN_ACTION_NOTHING:
        expected = plan.revision or -1
        text += (
            f"\n(dry run: nothing changed; add --expected-revision {expected} to apply "
            "exactly this plan)"
        )
    out.line(text)
    return 0


# -- following a rollout ----------------------------------------------------------------------


def progress_view(status: types_pb2.DeploymentStatus, width: int) -> RenderableType:
    """The live view: title, a bar of ready replicas, the messages, one row per replica."""
    ready, desired = status.ready_replicas, status.desired_replicas
    failed = status.rollout.state == types_pb2.ROLLOUT_STATE_FAILED
    bar = ProgressBar(
        total=max(desired, 1),
        completed=min(ready, desired),
        width=BAR_WIDTH,
        complete_style="red" if failed else "cyan",
        finished_style="red" if failed else "green",
    )
    line = Table.grid(padding=(0, 1))
    line.add_row(bar, Text(f"{ready}/{desired} ready, revision {render.revisions_cell(status)}"))
    hint = "" if status.rollout.state in _DONE else " (Ctrl-C stops waiting, not the rollout)"
    parts: list[RenderableType] = [Text(render.rollout_title(status) + hint), line]
    for message in (status.rollout.message, status.message):
        if message:
            parts.append(Text(render.escaped(message)))
    parts += [Text(""), Text(render.instances_table(status, width=width))]
    return Group(*parts)


class RolloutPrinter:
    """Shows each status of a followed rollout in the output's format."""

    def __init__(self, out: Output, show: Callable[[RenderableType], None] | None) -> None:
        self._out = out
        self._show = show
        self._last: tuple[object, ...] | None = None

    def __call__(self, status: types_pb2.DeploymentStatus) -> None:
        out = self._out
        if out.stream_message(pb.WatchDeploymentResponse(status=status)):
            return
        if out.format is Format.NAME:
            return
        if self._show is not None:
            self._show(progress_view(status, out.width))
            return
        key = render.rollout_key(status)
        if key == self._last:
            return
        if self._last is None:
            out.line(render.rollout_header_line())
        self._last = key
        out.line(render.rollout_line(status))
        if out.wide:
            for line in render.instance_lines(status):
                out.line(line)


async def follow(
    client: AlphaswarmClient,
    args: argparse.Namespace,
    out: Output,
    service_id: str,
    namespace: str,
    *,
    revision: int = 0,
    changed: bool = True,
) -> int:
    """Follow the rollout of ``service_id`` to its end; the exit code of its outcome.

    ``revision``: the one the change made (0: unknown); a view older than it is not
    taken for the outcome. ``changed``: a change was just made (for the messages).
    """
    wait_timeout: float | None = getattr(args, "wait_timeout", None)
    live = out.live and not out.structured and out.format is not Format.NAME
    final: types_pb2.DeploymentStatus | None = None
    with live_view(out) if live else contextlib.nullcontext() as show:
        printer = RolloutPrinter(out, show)
        try:
            async with asyncio.timeout(wait_timeout):
                final = await _until_done(client, service_id, namespace, revision, printer)
        except TimeoutError:
            final = None
        except Unimplemented as error:
            done = "the change was made, but " if changed else ""
            _error_line(
                f"{error.one_line()}; {done}this provider reports no rollout to follow "
                f"(see 'alphaswarm watch {service_id}')"
            )
            return EXIT_RPC_ERROR
    return _outcome(out, final, service_id, wait_timeout)


async def _until_done(
    client: AlphaswarmClient,
    service_id: str,
    namespace: str,
    revision: int,
    printer: Callable[[types_pb2.DeploymentStatus], None],
) -> types_pb2.DeploymentStatus | None:
    """The final status of the rollout (None: the stream ended without one)."""
    last: types_pb2.DeploymentStatus | None = None
    for attempt in range(STALE_VIEW_ATTEMPTS):
        if attempt:
            await asyncio.sleep(STALE_VIEW_PAUSE_SECONDS)
        items = reconnecting(
            lambda: client.watch(service_id, namespace=namespace, until_rollout_done=True),
            f"rollout of {service_id}",
        )
        async with contextlib.aclosing(items):
            async for status in items:
                if isinstance(status, Reconnected):
                    continue
                last = status
                printer(status)
        if last is None or last.revision >= revision:
            return last
    return last


def _outcome(
    out: Output,
    final: types_pb2.DeploymentStatus | None,
    service_id: str,
    wait_timeout: float | None,
) -> int:
    if final is None or final.rollout.state not in _DONE:
        why = (
            f"still in progress after {wait_timeout:g}s"
            if wait_timeout is not None and final is None
            else "not finished when the server ended the watch"
        )
        _error_line(
            f"rollout of {service_id}: {why}; outcome unknown: follow it with "
            f"'alphaswarm rollout status {service_id}'"
        )
        return EXIT_OUTCOME_UNKNOWN
    if final.rollout.state == types_pb2.ROLLOUT_STATE_FAILED:
        _error_line(render.rollout_outcome(final))
        return EXIT_ROLLOUT_FAILED
    if not out.structured and out.format is not Format.NAME:
        out.line(render.rollout_outcome(final))
    return 0


# -- the rollout commands -------------------------------------------------------------------


async def cmd_rollout_status(
    client: AlphaswarmClient, args: argparse.Namespace, out: Output
) -> int:
    return await follow(client, args, out, args.service_id, args.namespace, changed=False)


async def cmd_rollout_history(
    client: AlphaswarmClient, args: argparse.Namespace, out: Output
) -> int:
    items = [r async for r in client.iter_revisions(args.service_id, namespace=args.namespace)]
    out.result(
        pb.ListRevisionsResponse(revisions=items),
        lambda: render.revisions(items, wide=out.wide, width=out.width),
        lambda: [str(r.number) for r in items],
    )
    return 0


async def cmd_rollout_undo(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    check_change_flags(args)
    namespace = args.namespace
    service = f"{namespace or 'default'}/{args.service_id}"
    if args.dry_run:
        planned = await client.plan_rollback(
            args.service_id,
            to_revision=args.to_revision,
            expected_revision=args.expected_revision,
            namespace=namespace,
        )
        return show_plan(out, planned, planned.plan, service)
    status = await client.rollback_deployment(
        args.service_id,
        to_revision=args.to_revision,
        expected_revision=args.expected_revision,
        change_cause=args.change_cause,
        namespace=namespace,
    )
    response = pb.RollbackDeploymentResponse(status=status)
    if args.wait:
        announce(out, response, ref(status), f"revision {status.revision}")
        return await follow(
            client, args, out, status.service_id, status.namespace, revision=status.revision
        )
    out.result(
        response,
        lambda: render.deployments([status], wide=out.wide, width=out.width),
        lambda: render.names([status]),
    )
    return 0


def announce(out: Output, response: Message, service: str, what: str) -> None:
    """The answer of a change that is followed next: a stream message in JSON/YAML (the
    statuses follow as more), the name with ``-o name``, else one line."""
    if out.stream_message(response):
        return
    if out.format is Format.NAME:
        out.line(render.escaped(service))
        return
    out.line(f"{render.escaped(service)}: {what}; waiting for its rollout")


def ref(status: types_pb2.DeploymentStatus) -> str:
    return f"{status.namespace}/{status.service_id}"
