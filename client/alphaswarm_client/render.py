"""Human renderings of the API's messages for the CLI.

Tables are laid out by ``rich`` to a given width: on a terminal its width (the
columns that hold free text wrap or are cut, the others never), piped an
unlimited one, so scripts get whole rows. Stream rows that are printed one by
one (metrics and watch without a terminal) use fixed column widths instead,
since printed rows cannot be re-aligned. JSON and YAML are in output.py.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.table import Table

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2

from .output import UNLIMITED_WIDTH

_STATE_PREFIX = "DEPLOYMENT_STATE_"
_EVENT_PREFIX = "DEPLOYMENT_EVENT_"
_ROLLOUT_PREFIX = "ROLLOUT_STATE_"
_ACTION_PREFIX = "PLAN_ACTION_"
# C0 controls (but tab), DEL and C1: text from a server or a replica could otherwise
# drive the user's terminal (move the cursor, set the title, clear the screen).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def escaped(text: str) -> str:
    """``text`` with every control character but tab shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    width: int = UNLIMITED_WIDTH,
    flexible: Sequence[str] = ("MESSAGE", "NOTE", "CAPABILITIES", "STATUS", "VALUE", "IMAGE"),
) -> str:
    """Left-aligned columns two spaces apart, at most ``width`` wide: the ``flexible``
    columns (free text) fold when the row does not fit, the others keep their width."""
    grid = Table(
        box=None,
        pad_edge=False,
        show_edge=False,
        padding=(0, 2, 0, 0),
        header_style=None,
        collapse_padding=True,
    )
    for header in headers:
        if header in flexible:
            grid.add_column(header, overflow="fold")
        else:
            grid.add_column(header, no_wrap=True, overflow="ellipsis")
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    return render_to_text(grid, width)


def render_to_text(renderable: object, width: int) -> str:
    """``renderable`` as plain text ``width`` columns wide, trailing blanks removed."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        color_system=None,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
    )
    console.print(renderable, crop=True)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def state_name(state: int) -> str:
    return types_pb2.DeploymentState.Name(state).removeprefix(_STATE_PREFIX)  # type: ignore[arg-type]


def event_name(event: int) -> str:
    return types_pb2.DeploymentEvent.Name(event).removeprefix(_EVENT_PREFIX)  # type: ignore[arg-type]


def _set(ts: timestamp_pb2.Timestamp) -> bool:
    return bool(ts.seconds or ts.nanos)


def timestamp(ts: timestamp_pb2.Timestamp, *, clock_only: bool = False) -> str:
    if not _set(ts):
        return "-"
    moment = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return moment.strftime("%H:%M:%S" if clock_only else "%Y-%m-%dT%H:%M:%SZ")


def age(ts: timestamp_pb2.Timestamp, now: datetime | None = None) -> str:
    """Time since ``ts`` the way kubectl shows it: 42s, 5m10s, 3h4m, 2d5h, 400d."""
    if not _set(ts):
        return "-"
    now = now or datetime.now(UTC)
    seconds = int(now.timestamp() - ts.seconds)
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def size(n: int) -> str:
    """Bytes in binary units, three significant digits (``12.3MiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _pairs(mapping: Mapping[str, str]) -> str:
    items = sorted(mapping.items())
    return ",".join(f"{k}={v}" for k, v in items) or "-"


def providers(
    response: pb.ListProvidersResponse, *, wide: bool = False, width: int = UNLIMITED_WIDTH
) -> str:
    headers = ["PROVIDER", "KIND", "INSTALLED", "CAPABILITIES"]
    if wide:
        headers += ["ORIGIN", "NOTE"]
    rows = []
    for p in response.providers:
        row = [
            p.alias + (" *" if p.is_default else ""),
            p.kind,
            "yes" if p.installed else "no",
            ", ".join(p.capabilities) or "-",
        ]
        if wide:
            row += [p.origin or "-", "" if p.installed else p.install_hint]
        rows.append(row)
    text = table(headers, rows, width=width)
    if response.default_provider:
        text += f"\n(* default: {response.default_provider})"
    return text


def _fields(rows: Sequence[Sequence[str]]) -> str:
    """``key: value`` lines with the values aligned."""
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k + ':':<{width}}{v}" for k, v in rows)


def health(h: types_pb2.ProviderHealth) -> str:
    rows: list[list[str]] = [
        ["provider", h.alias],
        ["kind", h.kind],
        ["healthy", "yes" if h.healthy else "no"],
        ["message", h.message or "-"],
        ["checked", timestamp(h.checked_at)],
    ]
    rows.extend([k, v] for k, v in sorted(h.details.items()))
    return _fields(rows)


def _workload(s: types_pb2.DeploymentStatus) -> str:
    """What runs: the image, else the command (from the spec when the server sent it)."""
    if s.HasField("spec") and (s.spec.image or s.spec.command):
        return s.spec.image or " ".join(s.spec.command)
    return s.image or "-"


def deployments(
    items: Iterable[types_pb2.DeploymentStatus],
    *,
    wide: bool = False,
    width: int = UNLIMITED_WIDTH,
    now: datetime | None = None,
) -> str:
    headers = ["NAMESPACE", "SERVICE", "PROVIDER", "STATE", "READY", "RESTARTS", "AGE"]
    if wide:
        headers += ["IMAGE", "CHANGED", "MESSAGE"]
    rows = []
    for s in items:
        row: list[object] = [
            s.namespace,
            s.service_id,
            s.provider,
            state_name(s.state),
            f"{s.ready_replicas}/{s.desired_replicas}",
            s.restarts,
            age(s.created_at, now),
        ]
        if wide:
            row += [_workload(s), timestamp(s.changed_at), s.message or ""]
        rows.append(row)
    return table(headers, rows, width=width) if rows else "no deployments"


def names(items: Iterable[types_pb2.DeploymentStatus]) -> list[str]:
    """``namespace/service`` per deployment (``-o name``)."""
    return [f"{s.namespace}/{s.service_id}" for s in items]


def _spec_rows(spec: types_pb2.DeploymentSpec) -> list[list[str]]:
    rows: list[list[str]] = []
    if spec.image:
        rows.append(["image", spec.image])
    if spec.command:
        rows.append(["command", " ".join(_quoted(arg) for arg in spec.command)])
    rows.append(["env", _pairs(spec.env)])
    if spec.ports:
        rows.append(["ports", ", ".join(_port(p) for p in spec.ports)])
    limits = [f"cpu={spec.resources.cpu}"] if spec.resources.cpu else []
    limits += [f"memory={spec.resources.memory}"] if spec.resources.memory else []
    rows.append(["resources", ",".join(limits) or "-"])
    if spec.provider_options:
        rows.append(["options", _pairs(spec.provider_options)])
    return rows


def _quoted(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,@%+" for c in arg) else repr(arg)


def _port(p: types_pb2.PortSpec) -> str:
    text = f"{p.host_port}:{p.container_port}" if p.host_port else str(p.container_port)
    return text + (f"/{p.protocol}" if p.protocol and p.protocol != "tcp" else "")


def status(
    s: types_pb2.DeploymentStatus,
    *,
    wide: bool = False,
    width: int = UNLIMITED_WIDTH,
    now: datetime | None = None,
) -> str:
    """One service in detail: a summary, what runs, then one row per replica."""
    summary = [
        ["service", f"{s.namespace}/{s.service_id}"],
        ["provider", s.provider],
        ["state", state_name(s.state)],
        ["replicas", f"{s.ready_replicas}/{s.desired_replicas} ready"],
        ["restarts", str(s.restarts)],
    ]
    if s.revision:
        rollout = rollout_state_name(s.rollout.state)
        if s.rollout.reason:
            rollout += f" ({escaped(s.rollout.reason)})"
        if s.rollout.message:
            rollout += f": {escaped(s.rollout.message)}"
        summary += [["revision", revisions_cell(s)], ["rollout", rollout]]
    if s.HasField("spec"):
        summary += _spec_rows(s.spec)
    else:
        summary.append(["image", s.image or "-"])
    summary += [
        ["labels", _pairs(s.labels)],
        ["message", s.message or "-"],
        ["created", timestamp(s.created_at)],
        ["changed", timestamp(s.changed_at)],
        ["observed", timestamp(s.updated_at)],
    ]
    text = _fields(summary)
    if s.instances:
        headers = ["INSTANCE", "STATE", "READY", "RESTARTS", "AGE", "MESSAGE"]
        if wide:
            headers.insert(5, "STARTED")
        rows = []
        for i in s.instances:
            row: list[object] = [
                i.instance_id,
                i.state,
                "yes" if i.ready else "no",
                i.restarts,
                age(i.started_at, now),
                i.message,
            ]
            if wide:
                row.insert(5, timestamp(i.started_at))
            rows.append(row)
        text += "\n\n" + table(headers, rows, width=width)
    return text


def config(c: types_pb2.ServiceConfig, *, width: int = UNLIMITED_WIDTH) -> str:
    head = _fields([["service", f"{c.namespace}/{c.service_id}"], ["version", c.version or "-"]])
    if not c.data:
        return head + "\n(no keys)"
    return head + "\n\n" + table(["KEY", "VALUE"], sorted(c.data.items()), width=width)


METRICS_HEADERS = ["TIME", "REPLICAS", "CPU%", "MEMORY", "NET RX", "NET TX", "STATUS"]
_METRICS_WIDTHS = (8, 8, 7, 9, 9, 9)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


_PER_REPLICA = ("replica_",)


def _extra(m: types_pb2.MetricSample, *, wide: bool) -> str:
    """Backend figures; per-replica ones (``replica_N_...``) only in the wide form."""
    items = sorted(m.extra.items())
    if not wide:
        items = [(k, v) for k, v in items if not k.startswith(_PER_REPLICA)]
    return " ".join(f"{k}={_number(v)}" for k, v in items)


def _metrics_cells(m: types_pb2.MetricSample, *, wide: bool = True) -> list[str]:
    state = "ok" if m.ok else f"error: {m.error}"
    return [
        timestamp(m.timestamp, clock_only=True),
        str(m.replicas),
        f"{m.cpu_percent:.1f}",
        size(m.memory_bytes),
        size(m.network_rx_bytes),
        size(m.network_tx_bytes),
        f"{state} {_extra(m, wide=wide)}".strip(),
    ]


def _fixed(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
    return "  ".join([*padded, *cells[len(widths) :]]).rstrip()


def metrics_header_line() -> str:
    return _fixed(METRICS_HEADERS, _METRICS_WIDTHS)


def metrics_line(m: types_pb2.MetricSample, *, wide: bool = True) -> str:
    return _fixed(_metrics_cells(m, wide=wide), _METRICS_WIDTHS)


def metrics_table(
    samples: Iterable[types_pb2.MetricSample], *, wide: bool = True, width: int = UNLIMITED_WIDTH
) -> str:
    return table(METRICS_HEADERS, (_metrics_cells(m, wide=wide) for m in samples), width=width)


def metrics_replicas(m: types_pb2.MetricSample, *, width: int = UNLIMITED_WIDTH) -> str:
    """The per-replica figures of a sample (``replica_N_NAME`` extras) as a table."""
    per: dict[str, dict[str, float]] = {}
    for key, value in m.extra.items():
        if key.startswith("replica_"):
            number, _, name = key.removeprefix("replica_").partition("_")
            per.setdefault(number, {})[name] = value
    if not per:
        return ""
    columns = sorted({name for figures in per.values() for name in figures})
    rows = [
        [number, *(_number(per[number].get(c, 0.0)) for c in columns)]
        for number in sorted(per, key=lambda n: (len(n), n))
    ]
    return table(["REPLICA", *(c.upper() for c in columns)], rows, width=width)


WATCH_HEADERS = ["TIME", "STATE", "READY", "RESTARTS", "MESSAGE"]
_WATCH_WIDTHS = (8, 11, 7, 8)


def watch_header_line() -> str:
    return _fixed(WATCH_HEADERS, _WATCH_WIDTHS)


def watch_line(s: types_pb2.DeploymentStatus) -> str:
    return _fixed(
        [
            timestamp(s.updated_at, clock_only=True),
            state_name(s.state),
            f"{s.ready_replicas}/{s.desired_replicas}",
            str(s.restarts),
            s.message,
        ],
        _WATCH_WIDTHS,
    )


EVENTS_HEADERS = ["TIME", "EVENT", "NAMESPACE", "SERVICE", "STATE", "READY", "MESSAGE"]
_EVENTS_WIDTHS = (8, 8, 12, 20, 11, 7)


def event_header_line() -> str:
    return _fixed(EVENTS_HEADERS, _EVENTS_WIDTHS)


def event_line(event: pb.WatchDeploymentsResponse) -> str:
    s = event.status
    return _fixed(
        [
            timestamp(s.updated_at, clock_only=True),
            event_name(event.event),
            s.namespace,
            s.service_id,
            state_name(s.state),
            f"{s.ready_replicas}/{s.desired_replicas}",
            s.message,
        ],
        _EVENTS_WIDTHS,
    )


# -- rollouts, revisions and plans ------------------------------------------------------------


def rollout_state_name(state: int) -> str:
    name = types_pb2.RolloutState.Name(state).removeprefix(_ROLLOUT_PREFIX)  # type: ignore[arg-type]
    return "-" if name == "UNSPECIFIED" else name


def revisions_cell(s: types_pb2.DeploymentStatus) -> str:
    """``3``, or ``3 (runs 2)`` while the replicas still run another revision."""
    if s.observed_revision and s.observed_revision != s.revision:
        return f"{s.revision} (runs {s.observed_revision})"
    return str(s.revision or "-")


ROLLOUT_HEADERS = ["TIME", "REVISION", "ROLLOUT", "READY", "MESSAGE"]
_ROLLOUT_WIDTHS = (8, 14, 11, 7)


def rollout_header_line() -> str:
    return _fixed(ROLLOUT_HEADERS, _ROLLOUT_WIDTHS)


def rollout_line(s: types_pb2.DeploymentStatus) -> str:
    """One status of a followed rollout, for a pipe (fixed columns, no time but the
    status's own, so two equal states print equal lines)."""
    return _fixed(
        [
            timestamp(s.updated_at, clock_only=True),
            revisions_cell(s),
            rollout_state_name(s.rollout.state),
            f"{s.ready_replicas}/{s.desired_replicas}",
            escaped(s.message),
        ],
        _ROLLOUT_WIDTHS,
    )


def rollout_key(s: types_pb2.DeploymentStatus) -> tuple[object, ...]:
    """What a followed rollout shows, without the times: a line is printed when it changes."""
    return (
        s.revision,
        s.observed_revision,
        s.rollout.state,
        s.ready_replicas,
        s.desired_replicas,
        s.message,
        tuple((i.instance_id, i.state, i.ready, i.message) for i in s.instances),
    )


def instance_lines(s: types_pb2.DeploymentStatus) -> list[str]:
    """Each replica on an indented line (``-o wide`` of a followed rollout on a pipe)."""
    return [
        f"  {escaped(i.instance_id)}  {escaped(i.state)}  {'ready' if i.ready else 'not ready'}"
        + (f"  {escaped(i.message)}" if i.message else "")
        for i in s.instances
    ]


def instances_table(
    s: types_pb2.DeploymentStatus, *, width: int = UNLIMITED_WIDTH, now: datetime | None = None
) -> str:
    rows = [
        [
            escaped(i.instance_id),
            escaped(i.state),
            "yes" if i.ready else "no",
            i.restarts,
            age(i.started_at, now),
            escaped(i.message),
        ]
        for i in s.instances
    ]
    headers = ["INSTANCE", "STATE", "READY", "RESTARTS", "AGE", "MESSAGE"]
    return table(headers, rows, width=width) if rows else "(no replicas)"


def rollout_title(s: types_pb2.DeploymentStatus) -> str:
    return (
        f"rollout of {escaped(s.namespace)}/{escaped(s.service_id)} to revision {s.revision}: "
        f"{rollout_state_name(s.rollout.state)}"
    )


def rollout_outcome(s: types_pb2.DeploymentStatus) -> str:
    """The last word on a finished rollout, one line: what, the reason, the backend's words."""
    text = rollout_title(s)
    if s.rollout.reason:
        text += f": {escaped(s.rollout.reason)}"
    if s.rollout.message:
        text += f": {escaped(s.rollout.message)}"
    text += f" ({s.ready_replicas}/{s.desired_replicas} ready"
    if s.observed_revision and s.observed_revision != s.revision:
        text += f", replicas run revision {s.observed_revision}"
    return text + ")"


def revision_note(r: types_pb2.Revision) -> str:
    if r.rollback_of:
        return ("automatic " if r.automatic else "") + f"rollback to {r.rollback_of}"
    return "automatic" if r.automatic else ""


def revisions(
    items: Iterable[types_pb2.Revision], *, wide: bool = False, width: int = UNLIMITED_WIDTH
) -> str:
    """The history, newest first: number, when, why, and whether it was a rollback."""
    headers = ["REVISION", "CREATED", "CHANGE-CAUSE", "NOTE"]
    if wide:
        headers += ["CONFIG", "RUNS"]
    rows = []
    for r in items:
        row: list[object] = [
            r.number,
            timestamp(r.created_at),
            escaped(r.change_cause) or "-",
            revision_note(r) or "-",
        ]
        if wide:
            workload = r.spec.image or " ".join(_quoted(arg) for arg in r.spec.command)
            row += [escaped(r.config_version) or "-", escaped(workload) or "-"]
        rows.append(row)
    if not rows:
        return "no revisions"
    return table(headers, rows, width=width, flexible=("CHANGE-CAUSE", "RUNS"))


_ACTION_MEANING = {
    types_pb2.PLAN_ACTION_NOTHING: "nothing changes",
    types_pb2.PLAN_ACTION_CREATE: "the service is created",
    types_pb2.PLAN_ACTION_IN_PLACE: "replicas are added or removed, the others keep running",
    types_pb2.PLAN_ACTION_ROLLING_RESTART: "replicas restart one at a time with the new values",
    types_pb2.PLAN_ACTION_REPLACE: "replicas are replaced by new ones, one at a time",
}


def plan_action_name(action: int) -> str:
    return types_pb2.PlanAction.Name(action).removeprefix(_ACTION_PREFIX)  # type: ignore[arg-type]


def plan(p: types_pb2.Plan, service: str) -> str:
    """A plan as a diff: the action, then ``+ path: new``, ``- path: old`` or
    ``~ path: old -> new`` per field (values as the server sent them: secrets masked)."""
    against = f"revision {p.revision}" if p.revision else "no revision (the service is new)"
    meaning = _ACTION_MEANING.get(p.action, "")
    lines = [
        f"plan for {escaped(service)}, computed against {against}:",
        f"  action: {plan_action_name(p.action)}" + (f" ({meaning})" if meaning else ""),
    ]
    for change in p.changes:
        path, old, new = (escaped(v) for v in (change.path, change.old_value, change.new_value))
        if not old:
            lines.append(f"  + {path}: {new}")
        elif not new:
            lines.append(f"  - {path}: {old}")
        else:
            lines.append(f"  ~ {path}: {old} -> {new}")
    return "\n".join(lines)
