"""The container image: built offline from the Dockerfile, run on the local engine.

Each test runs the image the way the Kubernetes manifests do (read-only root
filesystem, state on a writable mount, non-root) and waits for the image's own
HEALTHCHECK (grpc.health.v1 through deploy/image/healthcheck.py) to turn healthy,
with only its interval shortened so the test does not wait 15 s per check.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_controller.security.devcerts import make_dev_certs

APP_UID = 10001
STATE = "/var/lib/alphaswarm"


def _run(api: docker.APIClient, image: str, env: dict[str, str], **host: Any) -> str:
    config = api.create_host_config(
        port_bindings={50051: ("127.0.0.1", None)},
        read_only=True,
        tmpfs={STATE: f"uid={APP_UID},gid={APP_UID},mode=0700", "/tmp": "mode=1777"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        **host,
    )
    container = api.create_container(
        image,
        environment=env,
        ports=[50051],
        host_config=config,
        # Only the interval is overridden: the test command is the image's own.
        healthcheck={"interval": 1_000_000_000, "start_period": 30_000_000_000},
        labels={"dev.alphaswarm.test": "image"},
    )
    container_id = str(container["Id"])
    api.start(container_id)
    return container_id


@contextlib.contextmanager
def running(api: docker.APIClient, image: str, env: dict[str, str], **host: Any) -> Iterator[str]:
    container_id = _run(api, image, env, **host)
    try:
        yield container_id
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(container_id, force=True)


def _logs(api: docker.APIClient, container_id: str) -> str:
    return bytes(api.logs(container_id)).decode(errors="replace")


def wait_healthy(api: docker.APIClient, container_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = api.inspect_container(container_id)["State"]
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return
        if not state.get("Running"):
            break
        time.sleep(0.5)
    pytest.fail(
        f"container not healthy: {state.get('Status')} {state.get('Health')}\n"
        f"{_logs(api, container_id)}"
    )


def host_port(api: docker.APIClient, container_id: str) -> int:
    bindings = api.port(container_id, 50051)
    return int(bindings[0]["HostPort"])


def exec_output(api: docker.APIClient, container_id: str, *cmd: str) -> str:
    run = api.exec_create(container_id, list(cmd))
    return bytes(api.exec_start(run["Id"])).decode()


def test_image_declares_non_root_user_and_grpc_healthcheck(
    engine: docker.APIClient, image: str
) -> None:
    config = engine.inspect_image(image)["Config"]  # type: ignore[no-untyped-call]
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert config["Healthcheck"]["Test"] == [
        "CMD",
        "/opt/alphaswarm/bin/python",
        "/opt/alphaswarm/healthcheck.py",
    ]
    assert "ALPHASWARM_CP_LISTEN=0.0.0.0:50051" in config["Env"]
    assert not any(e.startswith("ALPHASWARM_CP_INSECURE=") for e in config["Env"])
    assert config["Labels"]["dev.alphaswarm.extras"] == ""


def test_container_serves_list_providers_as_non_root(engine: docker.APIClient, image: str) -> None:
    env = {"ALPHASWARM_CP_INSECURE": "true", "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS": "2"}
    with running(engine, image, env) as container_id:
        wait_healthy(engine, container_id)
        port = host_port(engine, container_id)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.ProviderServiceStub(channel).ListProviders(
                pb.ListProvidersRequest(), timeout=10
            )
        assert reply.default_provider == "local"
        providers = {p.alias: p for p in reply.providers}
        assert providers["local"].installed and providers["local"].is_default
        # EXTRAS="" installs no provider SDK: the image reports them as not installed.
        assert not providers["kubernetes"].installed
        assert "kubernetes" in providers["kubernetes"].install_hint

        status = exec_output(engine, container_id, "cat", "/proc/1/status")
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(APP_UID)] * 4, uids
        assert exec_output(engine, container_id, "id", "-u").strip() == str(APP_UID)
        # The root filesystem is read-only; the state dir is the one writable place.
        assert "Read-only" in exec_output(engine, container_id, "touch", "/opt/alphaswarm/x")
        assert (
            exec_output(engine, container_id, "ls", f"{STATE}/local").split().count("state.sqlite3")
            == 1
        )

        engine.stop(container_id, timeout=20)
        state = engine.inspect_container(container_id)["State"]
        assert state["ExitCode"] == 0, _logs(engine, container_id)
        assert "stopped" in _logs(engine, container_id)


def test_container_refuses_plaintext_without_opt_in(engine: docker.APIClient, image: str) -> None:
    with running(engine, image, {}) as container_id:
        result = engine.wait(container_id, timeout=60)
        assert result["StatusCode"] != 0
        assert "refusing to serve plaintext on 0.0.0.0:50051" in _logs(engine, container_id)


def test_container_serves_mtls_and_healthcheck_follows(
    engine: docker.APIClient, image: str, tmp_path: Path
) -> None:
    certs = make_dev_certs(tmp_path / "certs")
    mounted = tmp_path / "mounted"
    shutil.copytree(certs.directory, mounted)
    for path in [mounted, *mounted.iterdir()]:
        shutil.chown(path, APP_UID, APP_UID)  # the key is 0600: the app user must own it
    env = {
        "ALPHASWARM_CP_TLS_CERT": "/certs/server.pem",
        "ALPHASWARM_CP_TLS_KEY": "/certs/server-key.pem",
        "ALPHASWARM_CP_TLS_CLIENT_CA": "/certs/ca.pem",
        "ALPHASWARM_HEALTHCHECK_CA": "/certs/ca.pem",
        "ALPHASWARM_HEALTHCHECK_CLIENT_CERT": "/certs/client.pem",
        "ALPHASWARM_HEALTHCHECK_CLIENT_KEY": "/certs/client-key.pem",
    }
    binds = {str(mounted): {"bind": "/certs", "mode": "ro"}}
    with running(engine, image, env, binds=binds) as container_id:
        wait_healthy(engine, container_id)
        assert "(mTLS, default provider local)" in _logs(engine, container_id)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=certs.ca.read_bytes(),
            private_key=certs.client_key.read_bytes(),
            certificate_chain=certs.client_cert.read_bytes(),
        )
        target = f"127.0.0.1:{host_port(engine, container_id)}"
        with grpc.secure_channel(target, credentials) as channel:
            reply = pb_grpc.ProviderServiceStub(channel).ListProviders(
                pb.ListProvidersRequest(), timeout=10
            )
        assert reply.default_provider == "local"
        # Without a client certificate the handshake fails: mTLS really is on.
        anonymous = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        with grpc.secure_channel(target, anonymous) as channel, pytest.raises(grpc.RpcError):
            pb_grpc.ProviderServiceStub(channel).ListProviders(pb.ListProvidersRequest(), timeout=5)
