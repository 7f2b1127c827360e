"""Raw JSON calls through the kubernetes client's ApiClient.

The provider speaks to paths directly (``/apis/apps/v1/...``) instead of the
generated typed methods: it needs exact control of the PATCH content type
(server-side apply, strategic merge), works with the JSON the server sent
(turning 5,000 Deployments into generated model objects would dominate a
list), and reaches metrics.k8s.io, which has no typed API. Authentication,
TLS, token refresh, retries and timeouts are the client's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

JsonObj = dict[str, Any]

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: JsonObj


class Transport:
    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float] | None,
        accept: str = "application/json",
    ) -> Any:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params: Sequence[tuple[str, Any]] = [
            (k, _query_value(v)) for k, v in (query or {}).items() if v is not None and v != ""
        ]
        serialized = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(params),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*serialized, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Response:
        response = self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=timeout
        )
        data = response.read()
        parsed = json.loads(data) if data else {}
        return Response(response.status, parsed if isinstance(parsed, dict) else {})

    def stream(
        self,
        path: str,
        *,
        query: Mapping[str, Any],
        timeout: tuple[float, float],
        accept: str = "application/json",
    ) -> Any:
        """Open a streaming GET (a watch, a pod log): the raw urllib3 response, unread."""
        response = self._send(
            "GET", path, query=query, body=None, content_type=None, timeout=timeout, accept=accept
        )
        return response.response


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
