"""An Azure Resource Manager emulator over HTTP on 127.0.0.1, for the real azure-mgmt clients.

It speaks the parts of ARM the ``azure`` provider relies on, the way ARM does:

* every request needs ``?api-version=`` (400 ``MissingApiVersionParameter``) and a
  bearer token (401 ``AuthenticationFailed``);
* container groups (Microsoft.ContainerInstance): PUT is long-running (201 +
  ``Azure-AsyncOperation``, polled until ``Succeeded``), DELETE too (202 +
  ``Azure-AsyncOperation``), POST ``stop`` (204) and ``start`` (202), PATCH of
  tags, GET with an instance view, list by resource group paged with ``nextLink``;
* Azure Monitor ``.../providers/Microsoft.Insights/metrics`` (CpuUsage, MemoryUsage);
* AKS ``listClusterUserCredential`` returning base64 kubeconfigs;
* errors in ARM's ``{"error": {"code", "message"}}`` shape; faults (403, 429 with
  ``Retry-After``, quota) injected per method and path; every request recorded.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .arm_store import ArmError, ArmStore, Fault

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourcegroups/(?P<rg>[^/]+)"
_GROUPS = _RG + r"/providers/microsoft\.containerinstance/containergroups"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (
        "GET",
        re.compile(_GROUPS + r"/(?P<name>[^/]+)/providers/microsoft\.insights/metrics$"),
        "metrics",
    ),
    ("GET", re.compile(_GROUPS + r"$"), "list_groups"),
    ("GET", re.compile(_GROUPS + r"/(?P<name>[^/]+)$"), "get_group"),
    ("PUT", re.compile(_GROUPS + r"/(?P<name>[^/]+)$"), "put_group"),
    ("PATCH", re.compile(_GROUPS + r"/(?P<name>[^/]+)$"), "patch_group"),
    ("DELETE", re.compile(_GROUPS + r"/(?P<name>[^/]+)$"), "delete_group"),
    ("POST", re.compile(_GROUPS + r"/(?P<name>[^/]+)/stop$"), "stop_group"),
    ("POST", re.compile(_GROUPS + r"/(?P<name>[^/]+)/start$"), "start_group"),
    (
        "GET",
        re.compile(
            _SUB + r"/providers/microsoft\.containerinstance/locations/[^/]+"
            r"/operations/(?P<op>[^/]+)$"
        ),
        "operation",
    ),
    (
        "POST",
        re.compile(
            _RG + r"/providers/microsoft\.containerservice/managedclusters"
            r"/(?P<name>[^/]+)/listclusterusercredential$"
        ),
        "aks_credentials",
    ),
]


class ArmEmulator:
    """Start with ``start()``; point clients at ``base_url``; ``close()`` when done."""

    def __init__(
        self,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "alphaswarm-rg",
        location: str = "westeurope",
        *,
        page_size: int = 3,
        **delays: float,
    ) -> None:
        self.store = ArmStore(subscription_id, resource_group, location, **delays)
        self.page_size = page_size
        self.requests: list[tuple[str, str]] = []
        self.response_delay: dict[str, float] = {}
        """Method -> seconds each such request takes (to make concurrency observable)."""
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ArmEmulator:
        emulator = self

        class Handler(_Handler):
            arm = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- test helpers --------------------------------------------------------------------------

    def inject(
        self,
        method: str,
        path_pattern: str,
        status: int,
        code: str,
        message: str = "injected failure",
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fail the next ``times`` ``method`` requests whose path matches ``path_pattern``."""
        self.store.faults.append(
            Fault(method, path_pattern, status, code, message, times, headers or {})
        )

    def count(self, method: str, path_pattern: str = "") -> int:
        with self._requests_lock:
            return sum(1 for m, p in self.requests if m == method and re.search(path_pattern, p))

    def reset_counts(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    def counts(self) -> Counter[str]:
        with self._requests_lock:
            return Counter(m for m, _ in self.requests)

    def add_cluster(self, name: str, kubeconfig: str) -> None:
        self.store.clusters[name] = kubeconfig

    def record(self, method: str, path: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path))

    def enter(self, method: str) -> None:
        with self._requests_lock:
            self.in_flight[method] += 1
            self.max_in_flight[method] = max(self.max_in_flight[method], self.in_flight[method])
        time.sleep(self.response_delay.get(method, 0.0))

    def leave(self, method: str) -> None:
        with self._requests_lock:
            self.in_flight[method] -= 1


class _Handler(BaseHTTPRequestHandler):
    arm: ArmEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing ------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = re.sub(r"/+", "/", parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.arm.record(method, path)
        self.arm.enter(method)
        try:
            self._answer(method, path, query, raw)
        finally:
            self.arm.leave(method)

    def _answer(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        store = self.arm.store
        try:
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                raise ArmError(401, "AuthenticationFailed", "Authentication failed.")
            if not query.get("api-version"):
                raise ArmError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            fault = store.take_fault(method, path)
            if fault is not None:
                raise ArmError(fault.status, fault.code, fault.message, fault.headers)
            store.advance()
            for route_method, pattern, handler in ROUTES:
                match = pattern.match(path.lower())
                if route_method == method and match:
                    # Names keep their case: re-match on the original path.
                    original = re.compile(pattern.pattern, re.IGNORECASE).match(path)
                    assert original is not None
                    args = original.groupdict()
                    body = json.loads(raw) if raw else {}
                    getattr(self, "_" + handler)(args, query, body)
                    return
            raise ArmError(404, "NotFound", f"No route for {method} {path}.")
        except ArmError as error:
            self._send(
                error.status,
                {"error": {"code": error.code, "message": error.message}},
                error.headers,
            )

    def _send(
        self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("x-ms-request-id", "emulator")
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _base(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _operation_url(self, sub: str, op_id: str, api_version: str) -> str:
        location = self.arm.store.location
        return (
            f"{self._base()}/subscriptions/{sub}/providers/Microsoft.ContainerInstance/"
            f"locations/{location}/operations/{op_id}?api-version={api_version}"
        )

    # -- handlers ------------------------------------------------------------------------------

    def _list_groups(self, args: dict[str, str], query: dict[str, str], _: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        names = store.names()
        skip = int(query.get("$skipToken", "0"))
        page = names[skip : skip + self.arm.page_size]
        value = [store.render(name, instance_view=False) for name in page]
        body: dict[str, Any] = {"value": value}
        if skip + self.arm.page_size < len(names):
            body["nextLink"] = (
                f"{self._base()}{urlsplit(self.path).path}?api-version="
                f"{query['api-version']}&$skipToken={skip + self.arm.page_size}"
            )
        self._send(200, body)

    def _get_group(self, args: dict[str, str], _: dict[str, str], __: Any) -> None:
        self.arm.store.check_resource_group(args["rg"])
        self._send(200, self.arm.store.render(args["name"], instance_view=True))

    def _put_group(self, args: dict[str, str], query: dict[str, str], body: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        status, op_id = store.put_group(args["rg"], args["name"], body)
        headers = {
            "Azure-AsyncOperation": self._operation_url(args["sub"], op_id, query["api-version"])
        }
        self._send(status, store.render(args["name"], instance_view=False), headers)

    def _patch_group(self, args: dict[str, str], _: dict[str, str], body: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        store.patch_tags(args["name"], body.get("tags") or {})
        self._send(200, store.render(args["name"], instance_view=False))

    def _delete_group(self, args: dict[str, str], query: dict[str, str], _: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        op_id = store.delete_group(args["name"])
        if op_id is None:
            self._send(204, None)
            return
        headers = {
            "Azure-AsyncOperation": self._operation_url(args["sub"], op_id, query["api-version"])
        }
        self._send(202, None, headers)

    def _stop_group(self, args: dict[str, str], _: dict[str, str], __: Any) -> None:
        self.arm.store.check_resource_group(args["rg"])
        self.arm.store.stop_group(args["name"])
        self._send(204, None)

    def _start_group(self, args: dict[str, str], query: dict[str, str], _: Any) -> None:
        self.arm.store.check_resource_group(args["rg"])
        op_id = self.arm.store.start_group(args["name"])
        headers = {
            "Azure-AsyncOperation": self._operation_url(args["sub"], op_id, query["api-version"])
        }
        self._send(202, None, headers)

    def _operation(self, args: dict[str, str], _: dict[str, str], __: Any) -> None:
        self._send(200, self.arm.store.operation_status(args["op"]))

    def _metrics(self, args: dict[str, str], query: dict[str, str], _: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        values = store.metrics(args["name"])
        wanted = [n for n in query.get("metricnames", "").split(",") if n]
        if not wanted:
            raise ArmError(400, "BadRequest", "metricnames is required.")
        resource_id = store.group_id(args["rg"], args["name"])
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        series = []
        for metric in wanted:
            if metric not in ("CpuUsage", "MemoryUsage"):
                raise ArmError(
                    400, "BadRequest", f"Failed to find metric configuration for {metric}."
                )
            points: list[dict[str, Any]] = [{"timeStamp": (now - timedelta(minutes=1)).isoformat()}]
            if values is not None:
                average = values[0] if metric == "CpuUsage" else values[1]
                points.append({"timeStamp": now.isoformat(), "average": average})
            series.append(
                {
                    "id": f"{resource_id}/providers/Microsoft.Insights/metrics/{metric}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": metric, "localizedValue": metric},
                    "unit": "Count" if metric == "CpuUsage" else "Bytes",
                    "timeseries": [{"metadatavalues": [], "data": points}],
                    "errorCode": "Success",
                }
            )
        self._send(
            200,
            {
                "cost": 0,
                "timespan": query.get("timespan", ""),
                "interval": query.get("interval", "PT1M"),
                "value": series,
                "namespace": "Microsoft.ContainerInstance/containerGroups",
                "resourceregion": store.location,
            },
        )

    def _aks_credentials(self, args: dict[str, str], _: dict[str, str], __: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        kubeconfig = store.clusters.get(args["name"])
        if kubeconfig is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                "The Resource 'Microsoft.ContainerService/managedClusters/"
                f"{args['name']}' under resource group '{args['rg']}' was not found.",
            )
        encoded = base64.b64encode(kubeconfig.encode()).decode()
        self._send(200, {"kubeconfigs": [{"name": "clusterUser", "value": encoded}]})
