"""Images: the reference grammar checked before any call, exact lookup, bounded pulls.

Two engine behaviours make the obvious calls wrong:

* ``GET /images/{name}/json`` falls back to an image-ID prefix search when no
  image has that name (moby ``daemon/images.GetImage``: "Search based on ID"),
  so ``inspect_image("deadbeef")`` can return an unrelated image whose ID starts
  with those hex digits. A lookup here only counts when the image found carries
  the reference as one of its tags or digests (or the reference is its ID).
* ``POST /images/create`` (pull) is sent by the SDK with ``timeout=None`` and
  answers nothing until the manifest is resolved, so a stalled registry would
  hold the call forever. ``pull`` here ends by the call's deadline: a socket
  timeout covers the wait for the first byte and a watchdog closes the response
  at the deadline while progress is streaming. The engine does not cancel a pull
  whose client went away (dockerd 20.10 keeps fetching), so a timed-out pull may
  still finish in the background; it leaves an image, never a service.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Any

import docker.auth
import docker.errors
import requests.exceptions
from docker.utils import parse_repository_tag

from alphaswarm_core.providers.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    FieldViolation,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .engine import DeadlineAPIClient, deadline_left

# The reference grammar of github.com/distribution/reference (regexp.go), which the
# engine applies to every image name (an invalid one is a 400 "invalid reference
# format"). Checked before any call, so a typo never reaches the engine.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{64}")
#: distribution/reference NameTotalLengthMax.
NAME_MAX = 255

#: Registry errors that mean "try again later", not "no such image".
_THROTTLED = ("toomanyrequests", "429 too many requests", "rate limit")


def check_reference(image: str, path: str) -> list[FieldViolation]:
    """Violations of the engine's reference grammar (empty when ``image`` is fine)."""
    if _IMAGE_ID.fullmatch(image):
        return []
    match = _REFERENCE.fullmatch(image)
    if match is None:
        return [
            FieldViolation(
                path,
                "not an image reference: [registry[:port]/]name[:tag][@digest], "
                "name in lowercase letters, digits and separators",
            )
        ]
    if len(match["name"]) > NAME_MAX:
        return [FieldViolation(path, f"the repository name is longer than {NAME_MAX} characters")]
    return []


def _familiar(name: str) -> str:
    """The engine's familiar form of a repository name (RepoTags/RepoDigests use it):
    Docker Hub's domain dropped, and its ``library/`` for one-component names
    (distribution/reference ``FamiliarName``)."""
    domain, _, rest = name.partition("/")
    if rest and domain in ("docker.io", "index.docker.io"):
        name = rest
    elif rest and ("." in domain or ":" in domain or domain == "localhost"):
        return name  # another registry: its names are kept whole
    remainder = name.removeprefix("library/")
    return remainder if "/" not in remainder else name


def names_image(image: str, inspected: dict[str, Any]) -> bool:
    """Whether ``inspected`` (``GET /images/{ref}/json``) is the image ``image`` names."""
    image_id = str(inspected.get("Id", ""))
    if _IMAGE_ID.fullmatch(image):
        return image_id.removeprefix("sha256:") == image.removeprefix("sha256:")
    match = _REFERENCE.fullmatch(image)
    if match is None:
        return False
    name = _familiar(match["name"])
    if match["digest"]:
        digests = {_familiar(d) for d in inspected.get("RepoDigests") or []}
        return f"{name}@{match['digest']}" in digests
    tags = {_familiar(t) for t in inspected.get("RepoTags") or []}
    return f"{name}:{match['tag'] or 'latest'}" in tags


def local_id(api: DeadlineAPIClient, image: str) -> str | None:
    """The ID of the local image ``image`` names exactly, or None."""
    try:
        inspected: dict[str, Any] = api.inspect_image(image)  # type: ignore[no-untyped-call]
    except docker.errors.NotFound:
        return None
    return str(inspected["Id"]) if names_image(image, inspected) else None


def resolve(api: DeadlineAPIClient, image: str, policy: str, *, timeout: float) -> str:
    """The ID of ``image``, pulled per ``policy`` within ``timeout`` seconds."""
    if policy != "always":
        found = local_id(api, image)
        if found is not None:
            return found
        if policy == "never":
            raise ResourceNotFoundError(
                f"image {image!r} is not present on the engine (pull policy: never)",
                metadata={"cause": "IMAGE_NOT_FOUND", "image": image},
            )
    left = deadline_left()
    pull(api, image, timeout=timeout if left is None else min(timeout, left))
    found = local_id(api, image)
    if found is None:
        raise ResourceNotFoundError(
            f"image {image!r} was pulled but the engine does not list it under that name",
            metadata={"cause": "IMAGE_NOT_FOUND", "image": image},
        )
    return found


def pull(api: DeadlineAPIClient, image: str, *, timeout: float) -> None:
    """``docker pull image``, ending within ``timeout`` seconds whatever the registry does.

    The SDK's ``pull`` hides the response in a generator, so the request is made with
    the same SDK helpers it uses (auth header included) to keep the response, which
    the watchdog must be able to close.
    """
    deadline = time.monotonic() + timeout
    repository, tag = parse_repository_tag(image)
    registry, _ = docker.auth.resolve_repository_name(repository)
    headers = {}
    auth_header = docker.auth.get_config_header(api, registry)
    if auth_header:
        headers["X-Registry-Auth"] = auth_header
    sdk: Any = api
    try:
        response = sdk._post(
            sdk._url("/images/create"),
            params={"fromImage": repository, "tag": tag or "latest"},
            headers=headers,
            stream=True,
            timeout=timeout,
        )
    except requests.exceptions.Timeout as exc:
        raise _timed_out(image, timeout) from exc
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        _close(response)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
    watchdog.daemon = True
    watchdog.start()
    errors: list[str] = []
    try:
        sdk._raise_for_status(response)
        for message in sdk._stream_helper(response, decode=True):
            if isinstance(message, dict) and message.get("error"):
                errors.append(str(message["error"]))
    except docker.errors.APIError as exc:
        if exc.status_code not in (404, 500):
            raise
        errors.append(str(exc.explanation or exc))
    except Exception as exc:
        if fired.is_set() or isinstance(exc, requests.exceptions.Timeout):
            raise _timed_out(image, timeout) from exc
        raise
    finally:
        watchdog.cancel()
        _close(response)
    if fired.is_set():
        raise _timed_out(image, timeout)
    if errors:
        detail = errors[-1][:300]
        if any(marker in detail.lower() for marker in _THROTTLED):
            raise BackendUnavailableError(
                f"the registry throttles pulls of {image!r}: {detail}",
                retry_after_seconds=30.0,
                reason=ErrorReason.BACKEND_THROTTLED,
                metadata={"cause": "REGISTRY_THROTTLED", "image": image},
            )
        raise ResourceNotFoundError(
            f"image {image!r} is not present on the engine and could not be pulled: {detail}",
            metadata={"cause": "IMAGE_NOT_FOUND", "image": image},
        )


def _timed_out(image: str, timeout: float) -> BackendTimeoutError:
    return BackendTimeoutError(
        f"pulling image {image!r} did not finish within {timeout:.1f}s (the call's "
        "deadline or ALPHASWARM_DOCKER_COMPOSE_PULL_TIMEOUT); nothing was created",
        metadata={"cause": "IMAGE_PULL_TIMEOUT", "image": image},
    )


def _close(response: Any) -> None:
    # Shutting the socket down wakes a reader blocked in recv(); close() alone would
    # wait for the engine's next progress message.
    with contextlib.suppress(Exception):
        response.raw.shutdown()
    with contextlib.suppress(Exception):
        response.close()
