"""CloudRunProvider.delete against the Cloud Run and Secret Manager emulators."""

from __future__ import annotations

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name
from alphaswarm_controller.providers.gcp.config import secret_id
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    ConfigMapPatch,
    DeploymentNotFoundError,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.fakes.faults import Kind
from tests.fakes.gcp_auth import PROJECT
from tests.fakes.gcp_server import GcpEmulator

from .conftest import served


def _secret(namespace: str, service_id: str) -> str:
    return f"projects/{PROJECT}/secrets/{secret_id(cloud_run_name(namespace, service_id))}"


async def _configured(
    cloud_run: CloudRunProvider, specs: SpecFactory, namespace: str, service: str = "web"
) -> None:
    await cloud_run.start(specs(service, namespace, replicas=1))
    await wait_for(cloud_run, service, namespace, ready(1))
    await cloud_run.apply_config(ConfigMapPatch(service, namespace, set={"K": "v"}))


async def test_a_delete_cut_short_is_finished_by_the_next(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await _configured(cloud_run, cloud_run_specs, namespace)
    secret = _secret(namespace, "web")
    emulator.faults.inject("secretmanager:DeleteSecret", Kind.DENIED)
    with pytest.raises(BackendPermissionDenied, match=r"roles/secretmanager\.admin"):
        await cloud_run.delete("web", namespace=namespace)
    with pytest.raises(DeploymentNotFoundError):
        await cloud_run.status("web", namespace=namespace)
    assert secret in emulator.secrets.secrets, "the service went first; the secret is left"

    with pytest.raises(DeploymentNotFoundError):  # gone already: NOT_FOUND, but tidied up
        await cloud_run.delete("web", namespace=namespace)
    assert secret not in emulator.secrets.secrets
    assert secret not in emulator.secrets.versions
    assert await cloud_run.delete("web", namespace=namespace, allow_missing=True) is False


async def test_a_concurrent_change_is_read_again(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await _configured(cloud_run, cloud_run_specs, namespace)
    emulator.faults.clear()
    emulator.faults.inject("run:DeleteService", Kind.CONFLICT)
    emulator.faults.inject("secretmanager:DeleteSecret", Kind.CONFLICT)
    gets = served(emulator, "run:GetService")
    assert await cloud_run.delete("web", namespace=namespace) is True
    assert served(emulator, "run:DeleteService") == 1
    assert served(emulator, "secretmanager:DeleteSecret") == 1
    assert served(emulator, "run:GetService") - gets == 2, "read, conflict, read again"
    assert not [n for n in emulator.run.services if n.endswith(cloud_run_name(namespace, "web"))]
    assert _secret(namespace, "web") not in emulator.secrets.secrets


async def test_a_secret_of_that_name_that_is_not_ours_stays(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await _configured(cloud_run, cloud_run_specs, namespace)
    secret = _secret(namespace, "web")
    with emulator.plumbing.lock:
        emulator.secrets.secrets[secret].labels = {"owner": "someone-else"}
    assert await cloud_run.delete("web", namespace=namespace) is True
    assert secret in emulator.secrets.secrets


async def test_deleting_a_stopped_service_without_config(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await cloud_run.start(cloud_run_specs("web", namespace, replicas=1))
    await cloud_run.stop("web", namespace=namespace)
    assert await cloud_run.delete("web", namespace=namespace) is True
    assert await cloud_run.list_deployments(namespace=namespace) == []
    short = cloud_run_name(namespace, "web")
    with emulator.plumbing.lock:
        assert not [i for i in emulator.run.instances if i.service_name == short and not i.stopped]
