"""An HTTP front to moto server: faults, AWS's rules, and the ECS control plane.

Every request the provider sends goes through it (the provider's
``AWS_ENDPOINT_URL`` is the front's address); tests that inspect or arrange state
talk to moto directly (``MotoAws.client``), so faults never hit them. Per request:

1. ``aws_wire.parse`` names the service and operation (``ssm:PutParameter``);
2. ``faults.take`` may answer it with an injected fault, in that service's wire
   form (``aws_wire.error``): a ThrottlingException in JSON for ECS and SSM,
   ``Throttling`` in CBOR for CloudWatch, XML for STS... A fault's ``match`` is
   searched in the path and, for the JSON protocol (every call goes to ``/``), in
   the body, where the request names its resource (``"Name": "/alphaswarm/..."``);
3. ``aws_rules.check`` refuses what the real service refuses and moto does not, and
   ``aws_rules.rewrite`` adjusts a request moto would answer differently from the
   service (FilterLogEvents sorted across streams, GetLogEvents' exclusive endTime);
4. ECS requests go through ``EcsControlPlane.before``/``after``, which keep the
   deployments moto does not and rewrite moto's answers as ECS gives them;
5. everything else is moto's answer, unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3

from . import aws_presigned, aws_rules, aws_wire
from .aws_wire import AwsError, AwsRequest
from .ecs_control import EcsControlPlane
from .faults import Faults

log = logging.getLogger(__name__)

#: The tests' AWS credentials (MotoAws.env).
TEST_CREDENTIALS = {"testing": "testing"}
HOP_HEADERS = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive"})


class AwsFront:
    def __init__(
        self,
        upstream: str,
        *,
        faults: Faults | None = None,
        rules: aws_rules.RuleContext,
        ecs: EcsControlPlane | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.credentials = dict(TEST_CREDENTIALS)
        """Access key -> secret: what a presigned request must be signed with."""
        self.faults = faults or Faults()
        self.rules = rules
        self.ecs = ecs
        self._pool = urllib3.PoolManager(maxsize=16, retries=False)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the front first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> AwsFront:
        front = self

        class Handler(_Handler):
            pass

        Handler.front = front
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="aws-front", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.clear()

    def __enter__(self) -> AwsFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request ----------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        presigned = aws_presigned.presigned(method, target)
        if presigned is not None:
            return self._presigned(presigned, method, target, headers)
        request = aws_wire.parse(method, target, headers, body)
        if request is None:  # moto's own API (/moto-api/...) and anything unsigned
            return self._forward(method, target, headers, body)
        where = (
            f"{target} {body.decode(errors='replace')}" if request.protocol == "json" else target
        )
        fault = self.faults.take(request.name, where)
        if fault is not None:
            return aws_wire.error(request, aws_wire.fault_error(request, fault))
        refusal = aws_rules.check(request, self.rules)
        if refusal is not None:
            return aws_wire.error(request, refusal)
        rewritten = aws_rules.rewrite(request)
        if rewritten is not None:  # moto does not check signatures: the body may change
            body = json.dumps(rewritten).encode()
        if self.ecs is not None and request.service == "ecs":
            return self._ecs(request, method, target, headers, body)
        return self._forward(method, target, headers, body)

    def _presigned(
        self, request: AwsRequest, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """A query-signed request (the EKS token's presigned GetCallerIdentity): the
        signature and expiry checked as AWS checks them (aws_presigned.py), then moto."""
        fault = self.faults.take(request.name, target)
        if fault is not None:
            return aws_wire.error(request, aws_wire.fault_error(request, fault))
        host = headers.get("host", "")
        refusal = aws_presigned.check(method, target, host, headers, self.credentials)
        if refusal is not None:
            return aws_wire.error(request, refusal)
        forwarded, signed = aws_presigned.header_signed(target)
        return self._forward(method, forwarded, {**headers, **signed}, b"")

    def _ecs(
        self,
        request: AwsRequest,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.ecs is not None
        early = self.ecs.before(request.operation, request.params)
        if isinstance(early, AwsError):
            return aws_wire.error(request, early)
        if early is not None:
            return 200, _json_headers(), json.dumps(early).encode()
        status, answer_headers, answer = self._forward(method, target, headers, body)
        if status != 200:
            return status, answer_headers, answer
        rewritten = self.ecs.after(request.operation, request.params, json.loads(answer or b"{}"))
        return status, answer_headers, json.dumps(rewritten).encode()

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
        answer: Any = self._pool.request(
            method, self.upstream + target, body=body or None, headers=sent, redirect=False
        )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
        return answer.status, kept, answer.data


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/x-amz-json-1.1"}


class _Handler(BaseHTTPRequestHandler):
    front: AwsFront
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("aws front: " + format, *args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, answer_headers, answer = self.front.handle(
                self.command, self.path, headers, body
            )
        except Exception:
            log.exception("aws front failed on %s %s", self.command, self.path)
            status, answer_headers, answer = 500, {}, b"aws front failure"
        self.send_response(status)
        for key, value in answer_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve
