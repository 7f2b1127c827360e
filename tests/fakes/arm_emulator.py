"""An Azure Resource Manager emulator over HTTP on 127.0.0.1, for the real azure-mgmt clients.

It speaks the parts of ARM the ``azure`` provider relies on, the way ARM does,
and refuses what ARM and ACI refuse (``arm_rules``, each rule with its source):

* every request needs ``?api-version=`` (400 ``MissingApiVersionParameter``) and a
  bearer token for an audience ARM accepts (401 ``AuthenticationFailed``, 401
  ``InvalidAuthenticationTokenAudience``; tokens from ``arm_testing.FakeCredential``
  carry the audience they were asked for);
* container groups (Microsoft.ContainerInstance): PUT is long-running (201 +
  ``Azure-AsyncOperation``, polled until ``Succeeded``), DELETE too (202), POST
  ``stop`` (204) and ``start`` (202, long-running), PATCH of tags, GET with an
  instance view, list by resource group paged with ``nextLink``; provisioning
  takes time, and operations on a group still changing are 409 (``arm_store``);
* Containers - List Logs (``tail``, ``timestamps``; ``{"content": ...}``) of emulated
  containers that write a line every 0.2 s while they run (``arm_logs``);
* Azure Monitor ``.../providers/Microsoft.Insights/metrics`` (CpuUsage, MemoryUsage);
* AKS ``listClusterUserCredential`` returning base64 kubeconfigs;
* errors in ARM's ``{"error": {"code", "message"}}`` shape.

Faults come from the shared ``faults.Faults`` plan (``emulator.faults``), consulted
once per request with the REST API's operation id (``arm:ContainerGroups_Stop``...):
THROTTLED is 429 with ``Retry-After``, UNAVAILABLE 503, CONFLICT 409, GONE 404 (ARM
has no 410: a resource that is gone is not found), DENIED 403 AuthorizationFailed.
Every request is recorded (``requests``, ``count``) for request-count assertions.
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

from . import arm_logs
from .arm_rules import ArmError
from .arm_store import ArmStore
from .faults import Fault, Faults, Kind

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourcegroups/(?P<rg>[^/]+)"
_GROUPS = _RG + r"/providers/microsoft\.containerinstance/containergroups"
#: (method, path, handler, operation id as the REST API reference names it)
ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    (
        "GET",
        re.compile(_GROUPS + r"/(?P<name>[^/]+)/providers/microsoft\.insights/metrics$"),
        "metrics",
        "Metrics_List",
    ),
    (
        "GET",
        re.compile(_GROUPS + r"/(?P<name>[^/]+)/containers/(?P<container>[^/]+)/logs$"),
        "container_logs",
        "Containers_ListLogs",
    ),
    ("GET", re.compile(_GROUPS + r"$"), "list_groups", "ContainerGroups_ListByResourceGroup"),
    ("GET", re.compile(_GROUPS + r"/(?P<name>[^/]+)$"), "get_group", "ContainerGroups_Get"),
    (
        "PUT",
        re.compile(_GROUPS + r"/(?P<name>[^/]+)$"),
        "put_group",
        "ContainerGroups_CreateOrUpdate",
    ),
    ("PATCH", re.compile(_GROUPS + r"/(?P<name>[^/]+)$"), "patch_group", "ContainerGroups_Update"),
    (
        "DELETE",
        re.compile(_GROUPS + r"/(?P<name>[^/]+)$"),
        "delete_group",
        "ContainerGroups_Delete",
    ),
    ("POST", re.compile(_GROUPS + r"/(?P<name>[^/]+)/stop$"), "stop_group", "ContainerGroups_Stop"),
    (
        "POST",
        re.compile(_GROUPS + r"/(?P<name>[^/]+)/start$"),
        "start_group",
        "ContainerGroups_Start",
    ),
    (
        "GET",
        re.compile(
            _SUB + r"/providers/microsoft\.containerinstance/locations/[^/]+"
            r"/operations/(?P<op>[^/]+)$"
        ),
        "operation",
        "ContainerGroups_AsyncOperation",
    ),
    (
        "POST",
        re.compile(
            _RG + r"/providers/microsoft\.containerservice/managedclusters"
            r"/(?P<name>[^/]+)/listclusterusercredential$"
        ),
        "aks_credentials",
        "ManagedClusters_ListClusterUserCredentials",
    ),
]
TOKEN_AUDIENCE_PREFIX = "aud="
"""Test tokens are ``aud=<audience>``: what a real token's ``aud`` claim would say,
optionally followed by ``;n=<serial>`` so that a test can tell one token from the next."""
TOKEN_SERIAL_SEPARATOR = ";n="
GATHER_SECONDS = 10.0
"""How long a request held by ``ArmEmulator.gather`` waits for the others at most."""


def fault_error(fault: Fault) -> ArmError:
    """A planned fault in ARM's wire form."""
    headers = {}
    if fault.retry_after is not None:
        # ARM sends whole seconds; fractions keep faulted suites fast, and azure-core
        # parses them (float).
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.kind is Kind.THROTTLED:
        headers.setdefault("Retry-After", "1")
        return ArmError(429, fault.code or "TooManyRequests", fault.message, headers)
    if fault.kind is Kind.UNAVAILABLE:
        return ArmError(503, fault.code or "ServiceUnavailable", fault.message, headers)
    if fault.kind is Kind.CONFLICT:
        return ArmError(409, fault.code or "Conflict", fault.message, headers)
    if fault.kind is Kind.GONE:
        return ArmError(404, fault.code or "ResourceNotFound", fault.message, headers)
    return ArmError(403, fault.code or "AuthorizationFailed", fault.message, headers)


class ArmEmulator:
    """``start()`` (or use as a context manager); point clients at ``base_url``; ``stop()``."""

    def __init__(
        self,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group: str = "alphaswarm-rg",
        location: str = "westeurope",
        *,
        page_size: int = 3,
        audiences: tuple[str, ...] = (),
        faults: Faults | None = None,
        **delays: float,
    ) -> None:
        """``audiences``: token audiences accepted (default: the emulator's own URL, the
        audience a custom ARM endpoint's scope names)."""
        self.store = ArmStore(subscription_id, resource_group, location, **delays)
        self.page_size = page_size
        self.faults = faults or Faults()
        self._audiences = audiences
        self.requests: list[tuple[str, str]] = []
        self.urls: list[str] = []
        """The path and query of every request, in arrival order."""
        self.tokens: list[str] = []
        """The bearer token each request carried, in arrival order."""
        self.timeline: list[tuple[float, str, str]] = []
        """(time.monotonic(), method, path) of every request, in arrival order."""
        self.gather: dict[str, int] = {}
        """Method -> hold each such request until that many have been in flight at once
        (for at most GATHER_SECONDS): a client's concurrency bound is then reached however
        loaded the machine, where a delay per request would leave it to timing."""
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._in_flight_changed = threading.Condition(self._requests_lock)
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

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def audiences(self) -> tuple[str, ...]:
        return self._audiences or (self.base_url,)

    # -- test helpers --------------------------------------------------------------------------

    def count(self, method: str, path_pattern: str = "") -> int:
        with self._requests_lock:
            return sum(1 for m, p in self.requests if m == method and re.search(path_pattern, p))

    def reset_counts(self) -> None:
        with self._requests_lock:
            self.requests.clear()
            self.urls.clear()
            self.tokens.clear()
            self.timeline.clear()

    def counts(self) -> Counter[str]:
        with self._requests_lock:
            return Counter(m for m, _ in self.requests)

    def add_cluster(self, name: str, kubeconfig: str) -> None:
        self.store.clusters[name] = kubeconfig

    def record_token(self, token: str) -> None:
        """The bearer token of a request, in arrival order (``tokens``)."""
        with self._requests_lock:
            self.tokens.append(token)

    def record(self, method: str, path: str, url: str = "") -> None:
        with self._requests_lock:
            self.requests.append((method, path))
            self.urls.append(url or path)
            self.timeline.append((time.monotonic(), method, path))

    def enter(self, method: str) -> None:
        with self._in_flight_changed:
            self.in_flight[method] += 1
            self.max_in_flight[method] = max(self.max_in_flight[method], self.in_flight[method])
            self._in_flight_changed.notify_all()
            wanted = self.gather.get(method, 0)
            self._in_flight_changed.wait_for(
                lambda: self.max_in_flight[method] >= wanted, timeout=GATHER_SECONDS
            )

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
        self.arm.record(method, path, self.path)
        self.arm.enter(method)
        try:
            self._answer(method, path, query, raw)
        finally:
            self.arm.leave(method)

    def _authenticate(self) -> None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[len("Bearer ") :].strip():
            raise ArmError(401, "AuthenticationFailed", "Authentication failed.")
        token = header[len("Bearer ") :].strip()
        self.arm.record_token(token)
        if token.startswith(TOKEN_AUDIENCE_PREFIX):
            claims = token[len(TOKEN_AUDIENCE_PREFIX) :]
            audience = claims.partition(TOKEN_SERIAL_SEPARATOR)[0].rstrip("/")
            accepted = [a.rstrip("/") for a in self.arm.audiences]
            if audience not in accepted:
                raise ArmError(
                    401,
                    "InvalidAuthenticationTokenAudience",
                    f"The access token has been obtained for wrong audience or resource "
                    f"'{audience}'. It should exactly match with one of the allowed "
                    f"audiences {', '.join(repr(a) for a in accepted)}.",
                )

    def _answer(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        store = self.arm.store
        try:
            self._authenticate()
            if not query.get("api-version"):
                raise ArmError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            for route_method, pattern, handler, operation in ROUTES:
                match = pattern.match(path.lower())
                if route_method == method and match:
                    fault = self.arm.faults.take(f"arm:{operation}", path)
                    if fault is not None:
                        raise fault_error(fault)
                    store.advance()
                    # Names keep their case: re-match on the original path.
                    original = re.compile(pattern.pattern, re.IGNORECASE).match(path)
                    assert original is not None
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError:
                        raise ArmError(
                            400, "InvalidRequestContent", "The request content was invalid."
                        ) from None
                    getattr(self, "_" + handler)(original.groupdict(), query, body)
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

    def _container_logs(self, args: dict[str, str], query: dict[str, str], _: Any) -> None:
        store = self.arm.store
        store.check_resource_group(args["rg"])
        tail = arm_logs.parse_tail(query.get("tail"))
        timestamps = arm_logs.parse_timestamps(query.get("timestamps"))
        text = store.container_log(
            args["name"], args["container"], tail=tail, timestamps=timestamps
        )
        self._send(200, {"content": text})

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
