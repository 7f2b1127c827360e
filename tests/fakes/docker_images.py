"""Test images for the docker_compose provider, built offline on the engine under test.

No registry is reachable from CI, so the images are ``FROM scratch`` plus Debian's
statically linked busybox (package busybox-static), copied in as ``/bin/busybox``
and ``/bin/sh`` (busybox picks the applet from its name). The default command
exits on SIGTERM at once, so stopping a replica takes milliseconds, not the
engine's 10-second kill timeout.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest

BUSYBOX_IMAGE = "alphaswarm-test/busybox:1"
BUSYBOX = Path("/bin/busybox")

#: Sleeps until SIGTERM/SIGINT, then exits 0 (``wait`` returns at once on a trapped signal).
IDLE_COMMAND = "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 1 & wait $!; done"

DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
COPY busybox /bin/sh
ENV PATH=/bin
LABEL org.opencontainers.image.title="alphaswarm test busybox"
CMD ["/bin/sh", "-c", "{IDLE_COMMAND}"]
"""


def _static_busybox() -> bytes:
    if not BUSYBOX.is_file():
        raise RuntimeError(
            f"{BUSYBOX} is missing: install Debian's busybox-static "
            "(scripts/ci/start-dockerd.sh does)"
        )
    linked = subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" not in (linked.stdout + linked.stderr):
        raise RuntimeError(
            f"{BUSYBOX} is dynamically linked and would not run FROM scratch: "
            "install busybox-static instead of busybox"
        )
    return BUSYBOX.read_bytes()


def _context() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (
            ("Dockerfile", DOCKERFILE.encode(), 0o644),
            ("busybox", _static_busybox(), 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def ensure_busybox_image(api: docker.APIClient) -> str:
    """Build the busybox test image unless the engine has it; return its tag."""
    try:
        api.inspect_image(BUSYBOX_IMAGE)  # type: ignore[no-untyped-call]
        return BUSYBOX_IMAGE
    except docker.errors.NotFound:
        pass
    errors = []
    for chunk in api.build(
        fileobj=_context(), custom_context=True, tag=BUSYBOX_IMAGE, rm=True, decode=True
    ):
        if "error" in chunk:
            errors.append(str(chunk["error"]))
    if errors:
        raise RuntimeError(f"building {BUSYBOX_IMAGE} failed: {'; '.join(errors)}")
    return BUSYBOX_IMAGE


START_HINT = 'start one with: eval "$(bash scripts/ci/start-dockerd.sh)"'


def connect_engine(needed_by: str, timeout: int) -> docker.APIClient:
    """The engine at DOCKER_HOST, or a test failure (never a skip) saying how to start one."""
    host = os.environ.get("DOCKER_HOST")
    if not host:
        pytest.fail(f"DOCKER_HOST is not set: {needed_by} need an engine; {START_HINT}")
    try:
        api = docker.APIClient(base_url=host, version="auto", timeout=timeout)
        api.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers at DOCKER_HOST={host} ({exc}); {START_HINT}")
    return api
