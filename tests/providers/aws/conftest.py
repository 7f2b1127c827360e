"""The aws provider's tests: moto behind the AWS front, per module; providers per test.

``bed`` is the ECS test bed (moto, the front's rules and faults, the ECS control
plane); ``provider`` an opened ``EcsProvider`` pointed at it. ``eks`` is the EKS
test bed (moto for EKS and STS, the real kube-apiserver of tests/realkube
checking EKS tokens through its token webhook, RBAC on) and ``eks_provider`` an
``EksProvider`` on it. ``spec_factory`` and ``namespace`` serve the contract
suites of both modes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from alphaswarm_controller.providers.aws import EcsProvider, EksProvider
from alphaswarm_core.testing import SpecFactory, spec_factory_for, unique_name
from tests.fakes.eks_server import EksTestBed, eks_test_bed
from tests.fakes.moto_server import IMAGE, EcsTestBed, ecs_test_bed
from tests.realkube.cluster import ControlPlane


@pytest.fixture(scope="module")
def bed() -> Iterator[EcsTestBed]:
    with ecs_test_bed() as test_bed:
        yield test_bed


@pytest.fixture
async def provider(bed: EcsTestBed) -> AsyncIterator[EcsProvider]:
    instance = EcsProvider(env=bed.provider_env())
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
        bed.faults.clear()


@pytest.fixture(scope="module")
def eks(real_kube_cluster: ControlPlane) -> Iterator[EksTestBed]:
    with eks_test_bed(real_kube_cluster) as test_bed:
        yield test_bed


@pytest.fixture
async def eks_provider(eks: EksTestBed) -> AsyncIterator[EksProvider]:
    instance = EksProvider(env=eks.provider_env())
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def spec_factory() -> SpecFactory:
    return spec_factory_for(image=IMAGE)


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")
