"""The provider contract, once per backend mode of the ``gcp`` alias, under background faults.

Cloud Run mode runs against the Cloud Run / Secret Manager / Monitoring / Logging
emulators, GKE mode against the ClusterManager emulator plus the real kube-apiserver
(tests/realkube: Google tokens checked through its token webhook, RBAC on); both with
one request in 7 throttled and one in 11 UNAVAILABLE on the GCP APIs (see conftest).
"""

from __future__ import annotations

import asyncio

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider, GkeProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name
from alphaswarm_controller.providers.gcp.config import secret_id
from alphaswarm_core.providers.protocol import InfrastructureProvider, LogEntry, LogQuery, Resources
from alphaswarm_core.testing import (
    SETTLE_TIMEOUT,
    Leftovers,
    ProviderContract,
    SpecFactory,
    by_instance,
    collect_logs,
    ready,
    spec_factory_for,
    unique_name,
    wait_for,
)
from alphaswarm_core.testing.contract import wait_for_logs
from tests.fakes.gcp_auth import PROJECT
from tests.fakes.gcp_run import image_not_found
from tests.fakes.gcp_server import GcpEmulator
from tests.realkube.contract import KUBERNETES_CAPABILITIES, RealKubeFixtures, read_real_metrics
from tests.realkube.fixtures import make_spec

#: A program that writes a line a second while serving $PORT, as a Cloud Run instance must;
#: the emulated instances write theirs every 0.5 s (tests/fakes/gcp_run.py).
TICKER = (
    "sh",
    "-c",
    'httpd -f -p "$PORT" & while true; do echo "tick $(date +%s)"; sleep 1; done',
)


#: An image the emulated registry does not hold (Cloud Run: CONTAINER_MISSING).
MISSING_IMAGE = "us-docker.pkg.dev/alphaswarm-tests/missing/app:never-pushed"


class TestCloudRunContract(ProviderContract):
    expected_capabilities = frozenset(
        {
            "start",
            "stop",
            "scale",
            "status",
            "list",
            "config",
            "metrics",
            "logs",
            "delete",
            "revisions",
        }
    )

    @pytest.fixture
    def provider(self, cloud_run: CloudRunProvider) -> CloudRunProvider:
        return cloud_run

    @pytest.fixture
    def spec_factory(self, cloud_run_specs: SpecFactory) -> SpecFactory:
        return cloud_run_specs

    @pytest.fixture
    def failing_spec_factory(self, emulator: GcpEmulator) -> SpecFactory:
        emulator.run.break_image(MISSING_IMAGE, image_not_found(MISSING_IMAGE))
        return spec_factory_for(image=MISSING_IMAGE, resources=Resources(cpu="1", memory="512Mi"))

    @pytest.fixture
    def log_spec_factory(self) -> SpecFactory:
        return spec_factory_for(
            image="mirror.gcr.io/library/busybox:1.36",
            command=TICKER,
            resources=Resources(cpu="1", memory="512Mi"),
        )

    @pytest.fixture
    def leftovers(self, emulator: GcpEmulator) -> Leftovers:
        """The service, its revisions and running instances, its secret and the secret's
        versions, as the emulators' own stores hold them."""

        async def still(service_id: str, namespace: str) -> list[str]:
            short = cloud_run_name(namespace, service_id)
            secret = f"projects/{PROJECT}/secrets/{secret_id(short)}"
            with emulator.plumbing.lock:
                held = [n for n in emulator.run.services if n.endswith(f"/services/{short}")]
                held += [
                    f"{name}/revisions/{revision}"
                    for name, revisions in emulator.run.revisions.items()
                    if name.endswith(f"/services/{short}")
                    for revision in revisions
                ]
                held += [
                    f"instance {i.instance_id[:12]} of {i.revision}"
                    for i in emulator.run.instances
                    if i.service_name == short and i.stopped is None
                ]
                if secret in emulator.secrets.secrets:
                    held.append(secret)
                held += [str(v.name) for v, _ in emulator.secrets.versions.get(secret, [])]
            return held

        return still

    # Cloud Run lists no instances: status names a service's replicas after the serving
    # revision (<revision>-<n>, cloudrun.py), while each log entry carries Cloud Run's own
    # instanceId, which no Cloud Run API maps to those names. The two log cases below are
    # the contract's, with the replicas identified by the instanceIds the logs carry (as
    # many as status reports ready) instead of the status names.

    async def test_logs_tail_filters_and_ends(
        self, provider: InfrastructureProvider, log_spec_factory: SpecFactory, namespace: str
    ) -> None:
        service, other = unique_name(), unique_name()
        await provider.start(log_spec_factory(service, namespace, replicas=2))
        await provider.start(log_spec_factory(other, namespace, replicas=1))
        await wait_for(provider, service, namespace, ready(2))
        await wait_for(provider, other, namespace, ready(1))

        def two_each(entries: list[LogEntry]) -> bool:
            grouped = by_instance(entries)
            return len(grouped) == 2 and all(len(lines) >= 2 for lines in grouped.values())

        entries = await wait_for_logs(provider, service, namespace, two_each)
        replicas = set(by_instance(entries))
        others = await wait_for_logs(provider, other, namespace, bool)
        assert not replicas & {e.instance_id for e in others}, "logs never mix services"
        for lines in by_instance(entries).values():
            times = [e.time for e in lines]
            assert times == sorted(times), "one replica's lines come in order"
            assert all("\n" not in e.text for e in lines)

        last = await collect_logs(provider, service, namespace, LogQuery(tail_lines=1))
        grouped = by_instance(last)
        assert set(grouped) == replicas and all(len(grouped[i]) == 1 for i in replicas)
        one = sorted(replicas)[0]
        only = await collect_logs(provider, service, namespace, LogQuery(instance_id=one))
        assert only and {e.instance_id for e in only} == {one}
        newest = max(e.time for e in entries)
        later = await collect_logs(provider, service, namespace, LogQuery(since=newest))
        assert later and all(e.time >= newest for e in later)

    async def test_logs_follow_new_lines_and_new_replicas(
        self, provider: InfrastructureProvider, log_spec_factory: SpecFactory, namespace: str
    ) -> None:
        service = unique_name()
        await provider.start(log_spec_factory(service, namespace, replicas=1))
        await wait_for(provider, service, namespace, ready(1))
        first = {e.instance_id for e in await wait_for_logs(provider, service, namespace, bool)}
        assert len(first) == 1
        stream = provider.stream_logs(
            service, LogQuery(follow=True, tail_lines=1), namespace=namespace
        )
        seen: list[LogEntry] = []
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                async for entry in stream:  # the tail, then new lines as they are written
                    seen.append(entry)
                    if len(seen) == 3:
                        break
                assert {e.instance_id for e in seen} == first
                await provider.scale(service, 2, namespace=namespace)
                async for entry in stream:  # a replica that appears later is followed too
                    seen.append(entry)
                    if entry.instance_id not in first:
                        break
        finally:
            await stream.aclose()
        assert {e.instance_id for e in seen} - first, "the new replica's lines arrived"
        times = [e.time for e in seen if e.instance_id in first]
        assert times == sorted(times)


class TestGkeContract(RealKubeFixtures, ProviderContract):
    # A KubernetesProvider: GKE mode has Kubernetes' native watch.
    expected_capabilities = KUBERNETES_CAPABILITIES

    @pytest.fixture
    def provider(self, gke: GkeProvider) -> GkeProvider:
        return gke

    @pytest.fixture
    def namespace(self, real_kube_namespace: str) -> str:
        return real_kube_namespace

    @pytest.fixture
    def spec_factory(self) -> SpecFactory:
        return make_spec

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)
