"""Human and JSON renderings of the API's messages for the CLI.

Tables are aligned to their widest cell. Stream rows (metrics, watch) cannot
be re-aligned after they are printed, so they use fixed column widths.
JSON is protobuf's canonical mapping with the proto field names, every field
present, so scripts see the same keys as grpcurl users do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2

_STATE_PREFIX = "DEPLOYMENT_STATE_"


def to_dict(message: Message) -> dict[str, object]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def to_json(message: Message | dict[str, object], *, compact: bool = False) -> str:
    """Pretty JSON for one result; ``compact`` gives the one-line form used on streams."""
    data = message if isinstance(message, dict) else to_dict(message)
    if compact:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(data, ensure_ascii=False, indent=2)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def state_name(state: int) -> str:
    return types_pb2.DeploymentState.Name(state).removeprefix(_STATE_PREFIX)  # type: ignore[arg-type]


def timestamp(ts: timestamp_pb2.Timestamp, *, clock_only: bool = False) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    moment = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return moment.strftime("%H:%M:%S" if clock_only else "%Y-%m-%dT%H:%M:%SZ")


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


def providers(response: pb.ListProvidersResponse) -> str:
    rows = [
        [
            p.alias + (" *" if p.is_default else ""),
            p.kind,
            "yes" if p.installed else "no",
            ",".join(p.capabilities) or "-",
            p.origin or "-",
            "" if p.installed else p.install_hint,
        ]
        for p in response.providers
    ]
    text = table(["PROVIDER", "KIND", "INSTALLED", "CAPABILITIES", "ORIGIN", "NOTE"], rows)
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


_DEPLOYMENT_HEADERS = [
    "NAMESPACE",
    "SERVICE",
    "PROVIDER",
    "STATE",
    "READY",
    "RESTARTS",
    "IMAGE",
    "MESSAGE",
]


def _deployment_row(s: types_pb2.DeploymentStatus) -> list[object]:
    return [
        s.namespace,
        s.service_id,
        s.provider,
        state_name(s.state),
        f"{s.ready_replicas}/{s.desired_replicas}",
        s.restarts,
        s.image or "-",
        s.message or "",
    ]


def deployments(items: Iterable[types_pb2.DeploymentStatus]) -> str:
    rows = [_deployment_row(s) for s in items]
    return table(_DEPLOYMENT_HEADERS, rows) if rows else "no deployments"


def status(s: types_pb2.DeploymentStatus) -> str:
    """One service in detail: a summary, then one row per replica."""
    summary = [
        ["service", f"{s.namespace}/{s.service_id}"],
        ["provider", s.provider],
        ["state", state_name(s.state)],
        ["replicas", f"{s.ready_replicas}/{s.desired_replicas} ready"],
        ["restarts", str(s.restarts)],
        ["image", s.image or "-"],
        ["labels", _pairs(s.labels)],
        ["message", s.message or "-"],
        ["updated", timestamp(s.updated_at)],
    ]
    text = _fields(summary)
    if s.instances:
        text += "\n\n" + table(
            ["INSTANCE", "STATE", "READY", "RESTARTS", "MESSAGE"],
            (
                [i.instance_id, i.state, "yes" if i.ready else "no", i.restarts, i.message]
                for i in s.instances
            ),
        )
    return text


def config(c: types_pb2.ServiceConfig) -> str:
    head = _fields([["service", f"{c.namespace}/{c.service_id}"], ["version", c.version or "-"]])
    if not c.data:
        return head + "\n(no keys)"
    return head + "\n\n" + table(["KEY", "VALUE"], sorted(c.data.items()))


METRICS_HEADERS = ["TIME", "REPLICAS", "CPU%", "MEMORY", "NET RX", "NET TX", "STATUS"]
_METRICS_WIDTHS = (8, 8, 7, 9, 9, 9)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _metrics_cells(m: types_pb2.MetricSample) -> list[str]:
    extra = " ".join(f"{k}={_number(v)}" for k, v in sorted(m.extra.items()))
    state = "ok" if m.ok else f"error: {m.error}"
    return [
        timestamp(m.timestamp, clock_only=True),
        str(m.replicas),
        f"{m.cpu_percent:.1f}",
        size(m.memory_bytes),
        size(m.network_rx_bytes),
        size(m.network_tx_bytes),
        f"{state} {extra}".strip(),
    ]


def _fixed(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
    return "  ".join([*padded, *cells[len(widths) :]]).rstrip()


def metrics_header_line() -> str:
    return _fixed(METRICS_HEADERS, _METRICS_WIDTHS)


def metrics_line(m: types_pb2.MetricSample) -> str:
    return _fixed(_metrics_cells(m), _METRICS_WIDTHS)


def metrics_table(samples: Iterable[types_pb2.MetricSample]) -> str:
    return table(METRICS_HEADERS, (_metrics_cells(m) for m in samples))


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
