"""What the real API server would refuse is refused first, as INVALID_ARGUMENT naming the field.

Each case was a provider defect the real kube-apiserver revealed and the old
emulator hid (issue 17): the request reached the server, which answered 422 or
500, reported as FAILED_PRECONDITION or UNAVAILABLE. Now the provider (or the
model, for the quantity syntax every backend shares) checks before any call, and
the rare 422 that still gets through is INVALID_ARGUMENT with the request field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_controller.providers.kubernetes.manifests import config_hash
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentSpec,
    InfrastructureProviderError,
    InvalidSpecError,
    PortSpec,
    Resources,
)
from alphaswarm_core.testing import unique_name
from tests.realkube.cluster import Endpoint
from tests.realkube.fixtures import IMAGE, make_spec

from .conftest import Sent


def _objects(real_kube: Endpoint, namespace: str, collection: str) -> list[str]:
    items = real_kube.admin().get(collection.format(ns=namespace))["items"]
    return sorted(item["metadata"]["name"] for item in items)


def left_behind(real_kube: Endpoint, namespace: str) -> list[str]:
    """Every Deployment, Service and ConfigMap of ours the namespace holds."""
    return [
        name
        for collection in (
            "/apis/apps/v1/namespaces/{ns}/deployments",
            "/api/v1/namespaces/{ns}/services",
            "/api/v1/namespaces/{ns}/configmaps?labelSelector=app.kubernetes.io/managed-by",
        )
        for name in _objects(real_kube, namespace, collection)
    ]


async def _invalid(call: Callable[[], Awaitable[Any]]) -> InvalidSpecError:
    """The error ``call`` (building its request and sending it) ends with."""
    with pytest.raises(InfrastructureProviderError) as info:
        await call()
    assert info.value.code == "INVALID_ARGUMENT", info.value
    assert isinstance(info.value, InvalidSpecError)
    return info.value


async def test_a_memory_quantity_kubernetes_cannot_parse_is_invalid_argument(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    """'256K' is no Kubernetes quantity (decimal kilo is 'k'): the server failed the apply
    with a 500 (UNAVAILABLE, retryable for a request that can never succeed). The model
    now accepts exactly the Kubernetes suffixes; '256k' runs."""
    spec = DeploymentSpec(
        service_id=unique_name(),
        namespace=namespace,
        image=IMAGE,
        replicas=1,
        resources=Resources(memory="256K"),
    )
    error = await _invalid(lambda: provider.start(spec.validate()))
    assert [v.field for v in error.violations] == ["spec.resources.memory"]
    assert left_behind(real_kube, namespace) == []
    fixed = DeploymentSpec(
        service_id=spec.service_id,
        namespace=namespace,
        image=IMAGE,
        resources=Resources(memory="256k"),
    )
    await provider.start(fixed.validate())
    deployment = real_kube.admin().get(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{spec.service_id}"
    )
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "256k"}


@pytest.mark.parametrize("key", [".", "..x"])
async def test_config_keys_a_configmap_rejects_are_invalid_argument(
    provider: KubernetesProvider,
    namespace: str,
    requests_sent: Sent,
    key: str,
) -> None:
    """The model allows '.'-only keys; a ConfigMap does not (IsConfigMapKey)."""
    service = unique_name()
    await provider.start(make_spec(service, namespace))
    before = await provider.get_config(service, namespace=namespace)
    requests_sent.clear()
    patch = ConfigMapPatch(service, namespace, set={key: "value", "GOOD": "1"})
    error = await _invalid(lambda: provider.apply_config(patch.validate()))
    assert [v.field for v in error.violations] == [f"patch.set[{key!r}]"]
    assert requests_sent == [], "refused before any call"
    assert await provider.get_config(service, namespace=namespace) == before


async def test_an_invalid_service_account_option_is_invalid_argument(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str, requests_sent: Sent
) -> None:
    spec = DeploymentSpec(
        service_id=unique_name(),
        namespace=namespace,
        image=IMAGE,
        replicas=1,
        provider_options={"service_account": "Not_A_Name"},
    )
    error = await _invalid(lambda: provider.start(spec.validate()))
    assert [v.field for v in error.violations] == ["spec.provider_options['service_account']"]
    assert requests_sent == []
    assert left_behind(real_kube, namespace) == []


async def test_a_service_name_starting_with_a_digit_is_refused_before_any_call(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str, requests_sent: Sent
) -> None:
    """``2048-web`` is a valid service_id (DNS-1123 label) but with ports it names a
    Kubernetes Service, which must be a DNS-1035 label on servers before
    RelaxedServiceNameValidation (1.35 and older: a 422 after the Deployment and
    ConfigMap were written). Without ports there is no Service and it runs."""
    with_ports = DeploymentSpec(
        service_id="2048-web", namespace=namespace, image=IMAGE, ports=(PortSpec(8080),)
    )
    error = await _invalid(lambda: provider.start(with_ports.validate()))
    assert [v.field for v in error.violations] == ["spec.service_id"]
    assert requests_sent == []
    assert left_behind(real_kube, namespace) == []
    await provider.start(make_spec("2048-web", namespace))
    snapshot = f"2048-web-config-{config_hash({})}"  # the config of revision 1
    assert left_behind(real_kube, namespace) == ["2048-web", "2048-web-config", snapshot]


async def test_a_422_that_gets_past_validation_is_invalid_argument_and_rolls_back(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    """Defence in depth: a spec that skipped validation (a label value the model would
    refuse) reaches the real server, whose 422 names the field. It is INVALID_ARGUMENT
    naming the request field, and the ConfigMap start created is removed again."""
    spec = DeploymentSpec(
        service_id=unique_name(), namespace=namespace, image=IMAGE, labels={"team": "-bad-"}
    )
    error = await _invalid(lambda: provider.start(spec))  # not .validate(): straight to the server
    fields = [v.field for v in error.violations]
    assert fields and all(f.startswith("spec.labels") for f in fields), fields
    assert left_behind(real_kube, namespace) == []
