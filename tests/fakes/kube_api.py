"""A Kubernetes API emulator speaking the real HTTP protocol on 127.0.0.1.

The real ``kubernetes`` client talks to it unchanged. It keeps the semantics a
workload controller relies on:

* core/v1 namespaces, configmaps, services, pods and apps/v1 deployments with
  resourceVersion, optimistic concurrency (409 Conflict), 409 AlreadyExists,
  422 Invalid and 404 ``Status`` bodies, creation in an absent namespace
  refused the way kube-apiserver refuses it;
* list with label and field selectors and ``limit``/``continue`` paging;
* watch with ``resourceVersion`` (chunked JSON lines, 410 Expired for a
  version older than the kept history), and ``drop_watches()`` to cut every
  open watch connection mid-stream;
* PATCH as JSON merge, strategic merge and server-side apply
  (``kube_merge``), the ``deployments/scale`` subresource;
* ``/version``, SelfSubjectAccessReview, metrics.k8s.io PodMetrics (toggle
  with ``metrics_enabled``);
* a fake controller (``kube_controller``) moving pods and readyReplicas
  toward spec.replicas;
* fault injection: RBAC denials (``deny``) answered 403 as the authorizer
  answers, queued failures (``fail``), a response ``delay``, bearer-token
  authentication (401) and optional TLS with a generated CA;
* a request log (``requests``/``count``) so tests can assert request counts.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from .kube_controller import FakeController, _is_ready
from .kube_merge import json_merge, server_side_apply, strategic_merge
from .kube_store import KINDS, ApiError, JsonObj, Store, now_iso, qualified

CORE = "api/v1"
APPS = "apis/apps/v1"
METRICS = "apis/metrics.k8s.io/v1beta1"
RESOURCE_PREFIX = {
    "namespaces": CORE,
    "configmaps": CORE,
    "services": CORE,
    "pods": CORE,
    "deployments": APPS,
}
_PATH = re.compile(
    r"^/(?P<prefix>api/v1|apis/[^/]+/[^/]+)"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-alphaswarm-emulator",
    "gitCommit": "0000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str = ""
    authorization: str = ""
    """The request's Authorization header, as sent."""


@dataclass
class InjectedFailure:
    code: int
    remaining: int
    path_contains: str = ""
    method: str = ""
    retry_after: int = 1


@dataclass
class Rule:
    verb: str
    resource: str
    namespace: str | None


@dataclass
class KubeApiEmulator:
    """Start with ``start()`` (or as a context manager); ``url`` is where it listens."""

    token: str | None = None
    tokens: Callable[[], Collection[str]] | None = None
    """The bearer tokens accepted now (say, every token an issuer handed out), for
    credentials that rotate; ``token`` is the one fixed token otherwise."""
    tls: bool = False
    metrics_enabled: bool = True
    tick: float = 0.05
    ready_delay: float = 0.1
    progress_deadline: float = 2.0
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    store: Store = field(default_factory=Store)

    def __post_init__(self) -> None:
        self.controller = FakeController(
            self.store,
            tick=self.tick,
            ready_delay=self.ready_delay,
            progress_deadline=self.progress_deadline,
        )
        self._denied: list[Rule] = []
        self._failures: list[InjectedFailure] = []
        self._drop_generation = 0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_pem: bytes | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-emulator-")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KubeApiEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        if self.tls:
            context, self.ca_pem = _tls_context(Path(self._tmp.name))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self.controller.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()
        self.controller.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._tmp.cleanup()

    def __enter__(self) -> KubeApiEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the emulator first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- test controls ------------------------------------------------------------------------

    def deny(self, verb: str = "*", resource: str = "*", namespace: str | None = None) -> None:
        """Answer 403 to ``verb`` on ``resource`` (``deployments/scale`` for subresources)."""
        self._denied.append(Rule(verb, resource, namespace))

    def allow_all(self) -> None:
        self._denied.clear()

    def fail(
        self,
        code: int = 503,
        *,
        times: int = 1,
        path_contains: str = "",
        method: str = "",
        retry_after: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``code``."""
        self._failures.append(InjectedFailure(code, times, path_contains, method, retry_after))

    def drop_watches(self) -> None:
        """Cut every open watch connection without a clean end of stream."""
        with self.store.changed:
            self._drop_generation += 1
            self.store.changed.notify_all()

    def count(self, method: str = "", path: str = "", **query: str) -> int:
        return sum(
            1
            for r in list(self.requests)
            if (not method or r.method == method)
            and (not path or r.path == path)
            and all(r.query.get(k) == v for k, v in query.items())
        )

    def is_denied(self, verb: str, resource: str, namespace: str | None) -> bool:
        return any(
            rule.verb in ("*", verb)
            and rule.resource in ("*", resource)
            and (rule.namespace is None or rule.namespace == namespace)
            for rule in self._denied
        )

    def kubeconfig(self, path: Path, *, context: str = "emulator", namespace: str = "") -> Path:
        """Write a kubeconfig that points at this emulator."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_pem:
            ca_file = Path(self._tmp.name) / "ca.crt"
            ca_file.write_bytes(self.ca_pem)
            cluster["certificate-authority"] = str(ca_file)
        ctx: dict[str, Any] = {"cluster": "emulator", "user": "emulator"}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "emulator", "user": {"token": self.token or "unused"}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def create_namespace(self, name: str) -> None:
        self.store.create("namespaces", "", {"metadata": {"name": name}})

    def take_failure(self, method: str, path: str) -> InjectedFailure | None:
        with self.store.lock:
            for failure in self._failures:
                if (
                    failure.remaining > 0
                    and failure.path_contains in path
                    and failure.method in ("", method)
                ):
                    failure.remaining -= 1
                    return failure
        return None


# -- HTTP handling ----------------------------------------------------------------------------


class _Dropped(Exception):
    """The emulator cut a watch connection on purpose."""


class _Handler(BaseHTTPRequestHandler):
    emulator: KubeApiEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing -----------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        emulator = self.emulator
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        auth = self.headers.get("Authorization") or ""
        emulator.requests.append(Recorded(method, parts.path, query, content_type, auth))
        try:
            if emulator.token is not None and auth != f"Bearer {emulator.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if emulator.tokens is not None and not (
                auth.startswith("Bearer ") and auth[len("Bearer ") :] in set(emulator.tokens())
            ):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            failure = emulator.take_failure(method, parts.path)
            if failure is not None:
                reason = {
                    503: "ServiceUnavailable",
                    500: "InternalError",
                    429: "TooManyRequests",
                    504: "Timeout",
                }.get(failure.code, "InternalError")
                raise ApiError(
                    failure.code,
                    reason,
                    "injected failure",
                    {"retryAfterSeconds": failure.retry_after},
                    {"Retry-After": str(failure.retry_after)},
                )
            if emulator.delay:
                time.sleep(emulator.delay)
            body = _parse_body(raw, content_type)
            code, result = self._route(method, parts.path, query, body, content_type)
            self._send(code, result)
        except ApiError as error:
            self._send(error.code, error.body(), error.headers)
        except _Dropped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, content_type: str
    ) -> tuple[int, Any]:
        if path == "/version" and method == "GET":
            return 200, VERSION
        if path == f"/{METRICS}" and method == "GET":
            if not self.emulator.metrics_enabled:
                raise _server_404()
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "metrics.k8s.io/v1beta1",
                "resources": [
                    {
                        "name": "pods",
                        "namespaced": True,
                        "kind": "PodMetrics",
                        "verbs": ["get", "list"],
                    }
                ],
            }
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            return 201, self._access_review(body)
        match = _PATH.match(path)
        if match is None:
            raise _server_404()
        prefix, ns, resource, name, sub = match.group("prefix", "ns", "resource", "name", "sub")
        if prefix == METRICS and resource == "pods":
            if not self.emulator.metrics_enabled:
                raise _server_404()
            return 200, self._pod_metrics(ns, name, query)
        if RESOURCE_PREFIX.get(resource) != prefix:
            raise _server_404()
        namespaced = KINDS[resource][2]
        if (not namespaced and ns is not None) or (
            namespaced and ns is None and (name is not None or method != "GET")
        ):
            raise _server_404()
        namespace = ns or ""
        verb = self._verb(method, name, query)
        rbac_resource = f"{resource}/{sub}" if sub else resource
        if self.emulator.is_denied(verb, rbac_resource, ns):
            raise _forbidden(verb, resource, sub, name, ns)
        if sub not in (None, "scale", "status") or (sub == "scale" and resource != "deployments"):
            raise _server_404()
        store = self.emulator.store

        if method == "GET" and name is None:
            if verb == "watch":
                self._watch(resource, ns, query)
                raise _Dropped  # the stream ended; the connection is closed
            return 200, store.list_page(
                resource,
                ns,
                label_selector=query.get("labelSelector", ""),
                field_selector=query.get("fieldSelector", ""),
                limit=int(query.get("limit") or 0),
                continue_token=query.get("continue", ""),
            )
        if method == "POST" and name is None:
            _require_object(body)
            return 201, store.create(resource, namespace, body)
        if name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        if method == "GET":
            obj = store.get(resource, namespace, name)
            return 200, _scale_of(obj) if sub == "scale" else obj
        if method == "DELETE":
            obj = store.delete(resource, namespace, name)
            if resource == "namespaces":
                self._delete_namespace_content(name)
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": resource, "uid": obj["metadata"]["uid"]},
            }
        if sub == "scale":
            return 200, self._scale(method, namespace, name, body, content_type)
        if method == "PUT":
            _require_object(body)
            if (body.get("metadata") or {}).get("name") != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
            expected = (body.get("metadata") or {}).get("resourceVersion")
            return 200, store.update(
                resource,
                namespace,
                name,
                lambda current: _replace(current, body),
                expected_rv=expected,
            )
        if method == "PATCH":
            return self._patch(resource, namespace, name, body, content_type, query)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")

    @staticmethod
    def _verb(method: str, name: str | None, query: dict[str, str]) -> str:
        if method == "GET":
            if name is not None:
                return "get"
            return "watch" if query.get("watch") in ("true", "1", "True") else "list"
        return VERBS.get(method, method.lower())

    # -- verbs --------------------------------------------------------------------------------

    def _patch(  # noqa: PLR0917 - mirrors the route's parsed parts
        self,
        resource: str,
        namespace: str,
        name: str,
        body: Any,
        content_type: str,
        query: dict[str, str],
    ) -> tuple[int, JsonObj]:
        store = self.emulator.store
        _require_object(body)
        if content_type == "application/apply-patch+yaml":
            manager = query.get("fieldManager", "")
            if not manager:
                raise ApiError(
                    400, "BadRequest", "PATCH, fieldManager is required for apply requests"
                )
            key = (resource, namespace, name, manager)
            with store.lock:
                if store.find(resource, namespace, name) is None:
                    created = store.create(resource, namespace, body)
                    store.applied[key] = body
                    return 201, created
                previous = store.applied.get(key)
                result = store.update(
                    resource,
                    namespace,
                    name,
                    lambda current: server_side_apply(current, previous, body),
                )
                store.applied[key] = body
                return 200, result
        merges = {
            "application/merge-patch+json": json_merge,
            "application/strategic-merge-patch+json": strategic_merge,
        }
        merge = merges.get(content_type)
        if merge is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown "
                f"format - accepted media types include: {', '.join(merges)}, "
                "application/apply-patch+yaml",
            )
        expected = (body.get("metadata") or {}).get("resourceVersion")
        return 200, store.update(
            resource, namespace, name, lambda current: merge(current, body), expected_rv=expected
        )

    def _scale(
        self, method: str, namespace: str, name: str, body: Any, content_type: str
    ) -> JsonObj:
        store = self.emulator.store
        _require_object(body)
        with store.lock:
            current = _scale_of(store.get("deployments", namespace, name))
            if method == "PUT":
                wanted = body
                expected = (body.get("metadata") or {}).get("resourceVersion")
            elif method == "PATCH":
                merge = strategic_merge if "strategic" in content_type else json_merge
                wanted = merge(current, body)
                expected = (body.get("metadata") or {}).get("resourceVersion")
            else:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            replicas = (wanted.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: '
                    "Invalid value: must be greater than or equal to 0",
                )

            def write(obj: JsonObj) -> JsonObj:
                obj["spec"]["replicas"] = replicas
                return obj

            updated = store.update("deployments", namespace, name, write, expected_rv=expected)
            return _scale_of(updated)

    def _delete_namespace_content(self, namespace: str) -> None:
        store = self.emulator.store
        with store.lock:
            for resource, objects in store.objects.items():
                for ns, name in [k for k in objects if k[0] == namespace]:
                    store.delete(resource, ns, name)

    def _access_review(self, body: Any) -> JsonObj:
        _require_object(body)
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = attributes.get("resource", "")
        if attributes.get("subresource"):
            resource = f"{resource}/{attributes['subresource']}"
        denied = self.emulator.is_denied(
            attributes.get("verb", ""), resource, attributes.get("namespace") or None
        )
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec") or {},
            "status": {"allowed": not denied, **({"reason": "denied by rule"} if denied else {})},
        }

    def _pod_metrics(self, ns: str | None, name: str | None, query: dict[str, str]) -> JsonObj:
        store = self.emulator.store
        if name is not None:
            pods = [store.get("pods", ns or "", name)]
        else:
            pods = store.matching("pods", ns, query.get("labelSelector", ""))
        items = []
        for pod in pods:
            if not _is_ready(pod):
                continue
            meta = pod["metadata"]
            items.append(
                {
                    "metadata": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "labels": meta.get("labels") or {},
                        "creationTimestamp": now_iso(),
                    },
                    "timestamp": now_iso(),
                    "window": "15s",
                    "containers": [
                        {"name": c["name"], "usage": {"cpu": "25000000n", "memory": "12Mi"}}
                        for c in pod["spec"]["containers"]
                    ],
                }
            )
        if name is not None:
            if not items:
                raise ApiError(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found')
            return items[0]
        return {
            "kind": "PodMetricsList",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items,
        }

    # -- watch --------------------------------------------------------------------------------

    def _watch(self, resource: str, ns: str | None, query: dict[str, str]) -> None:
        emulator, store = self.emulator, self.emulator.store
        from .kube_store import parse_field_selector, parse_label_selector

        labels_ok = parse_label_selector(query.get("labelSelector", ""))
        fields_ok = parse_field_selector(query.get("fieldSelector", ""))
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        generation = emulator._drop_generation
        requested = query.get("resourceVersion", "")

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def matches(obj: JsonObj) -> bool:
            meta = obj["metadata"]
            return (
                (ns is None or meta.get("namespace") == ns)
                and labels_ok(meta.get("labels") or {})
                and fields_ok(obj)
            )

        with store.lock:
            if requested in ("", "0"):
                last = store.resource_version
                initial = [("ADDED", o) for o in store.matching(resource, ns)]
                initial = [(t, o) for t, o in initial if matches(o)]
            else:
                last = int(requested)
                backlog = store.events_after(last)
                if backlog is None:
                    self._chunk(
                        {
                            "type": "ERROR",
                            "object": ApiError(
                                410, "Expired", f"too old resource version: {requested}"
                            ).body(),
                        }
                    )
                    self._end_chunks()
                    return
                initial = []
        for kind, obj in initial:
            self._chunk({"type": kind, "object": obj})
        while True:
            with store.changed:
                while True:
                    if emulator._stopping.is_set() or emulator._drop_generation != generation:
                        raise _Dropped
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._end_chunks()
                        return
                    events = [
                        e
                        for e in store.events_after(last) or []
                        if e.resource == resource and matches(e.obj)
                    ]
                    newest = store.resource_version
                    if events:
                        break
                    last = newest
                    store.changed.wait(min(remaining, 0.5))
            for event in events:
                self._chunk({"type": event.type, "object": event.obj})
            last = newest

    def _chunk(self, payload: JsonObj) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# -- helpers ----------------------------------------------------------------------------------


def _parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    try:
        if content_type.endswith("yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "BadRequest", f"cannot decode the request body: {exc}") from exc


def _require_object(body: Any) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be an object")


def _replace(current: JsonObj, body: JsonObj) -> JsonObj:
    replaced = dict(body)
    if "status" in current:
        replaced["status"] = current["status"]
    return replaced


def _scale_of(deployment: JsonObj) -> JsonObj:
    meta = deployment["metadata"]
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": deployment["spec"].get("replicas", 1)},
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def _server_404() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _forbidden(
    verb: str, resource: str, sub: str | None, name: str | None, ns: str | None
) -> ApiError:
    group = "apps" if resource == "deployments" else ""
    target = (
        f'{qualified(resource)} "{name}" is forbidden'
        if name
        else (f"{qualified(resource)} is forbidden")
    )
    scope = f' in the namespace "{ns}"' if ns else " at the cluster scope"
    full = f"{resource}/{sub}" if sub else resource
    return ApiError(
        403,
        "Forbidden",
        f'{target}: User "system:serviceaccount:alphaswarm:controller" cannot {verb} '
        f'resource "{full}" in API group "{group}"{scope}',
        {"name": name or "", "group": group, "kind": resource},
    )


def _tls_context(directory: Path) -> tuple[ssl.SSLContext, bytes]:
    """A self-signed serving certificate for 127.0.0.1 (its PEM doubles as the CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-emulator")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_pem


@contextlib.contextmanager
def running_emulator(**options: Any) -> Iterator[KubeApiEmulator]:
    emulator = KubeApiEmulator(**options).start()
    try:
        yield emulator
    finally:
        emulator.stop()
