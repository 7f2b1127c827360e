"""The aws provider's tests share a moto server per module and an ECS-mode provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from alphaswarm_controller.providers.aws import AwsProvider
from tests.fakes.moto_server import EcsTestBed, ecs_test_bed


@pytest.fixture(scope="module")
def bed() -> Iterator[EcsTestBed]:
    with ecs_test_bed() as test_bed:
        yield test_bed


@pytest.fixture
async def provider(bed: EcsTestBed) -> AsyncIterator[AwsProvider]:
    instance = AwsProvider(env=bed.provider_env())
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
