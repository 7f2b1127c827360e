"""Revisions and rollouts as the real Deployment controller keeps them (tests/realkube).

The contract checks the provider-agnostic semantics; these check that they are
Kubernetes' own: the numbers are the ReplicaSets' ``deployment.kubernetes.io/
revision`` annotations (so a second controller and ``kubectl rollout history``
agree), a rollback re-uses the old ReplicaSet as ``kubectl rollout undo`` does,
check-and-set rides on the resourceVersion (the real server's 409), a crashing
image fails with CRASH_LOOP once the controller says ProgressDeadlineExceeded,
and history is bounded by revisionHistoryLimit. Objects are read back with the
admin's raw API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_controller.providers.kubernetes.manifests import configmap_name
from alphaswarm_controller.providers.kubernetes.revisions import REVISION_HISTORY_LIMIT
from alphaswarm_core.call import making_change
from alphaswarm_core.providers.protocol import (
    ChangeRequest,
    ConfigMapPatch,
    RevisionConflict,
    RolloutState,
)
from alphaswarm_core.testing import unique_name, wait_for
from alphaswarm_core.testing.contract import rollout_done
from tests.fakes.kube_proxy import KubeFaultProxy
from tests.realkube.api import AdminApi
from tests.realkube.cluster import Endpoint
from tests.realkube.failures import CRASHING_IMAGE
from tests.realkube.fixtures import connect_real, connect_url, make_spec
from tests.waiting import until

pytestmark = pytest.mark.asyncio


def replica_sets(admin: AdminApi, namespace: str, service: str) -> dict[int, dict[str, Any]]:
    """The service's ReplicaSets by the revision the Deployment controller gave them."""
    selector = quote(f"alphaswarm.dev/service={service}")
    items = admin.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets?labelSelector={selector}")
    return {
        int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): rs
        for rs in items["items"]
    }


async def _done(provider: KubernetesProvider, service: str, namespace: str, revision: int) -> None:
    status = await wait_for(provider, service, namespace, rollout_done(revision))
    assert status.rollout is not None and status.rollout.state is RolloutState.SUCCEEDED, status


@pytest.fixture
async def second(real_kube: Endpoint) -> AsyncIterator[KubernetesProvider]:
    """Another controller's provider on the same cluster."""
    provider = connect_real(real_kube)
    await provider.open()
    yield provider
    await provider.close()


async def test_revisions_are_the_replica_sets_and_every_controller_sees_them(
    provider: KubernetesProvider,
    second: KubernetesProvider,
    real_kube: Endpoint,
    namespace: str,
) -> None:
    service = unique_name()
    with making_change(ChangeRequest(change_cause="first")):
        await provider.start(make_spec(service, namespace, env={"MODE": "a"}))
    await _done(provider, service, namespace, 1)
    with making_change(ChangeRequest(change_cause="config by the other one")):
        await second.apply_config(ConfigMapPatch(service, namespace, set={"K": "v"}))
    await _done(provider, service, namespace, 2)

    admin = real_kube.admin()
    held = replica_sets(admin, namespace, service)
    assert sorted(held) == [1, 2]
    assert held[2]["metadata"]["annotations"]["kubernetes.io/change-cause"] == (
        "config by the other one"
    ), "the cause is where kubectl rollout history shows it"
    deployment = admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{service}")
    assert deployment["spec"]["revisionHistoryLimit"] == REVISION_HISTORY_LIMIT
    mine = await provider.list_revisions(service, namespace=namespace)
    theirs = await second.list_revisions(service, namespace=namespace)
    assert [(r.number, r.change_cause) for r in mine] == [
        (2, "config by the other one"),
        (1, "first"),
    ]
    assert [(r.number, dict(r.config)) for r in theirs] == [(2, {"K": "v"}), (1, {})]


async def test_rollback_reuses_the_old_replica_set_like_rollout_undo(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, namespace, env={"MODE": "a"}))
    await _done(provider, service, namespace, 1)
    first = replica_sets(real_kube.admin(), namespace, service)[1]["metadata"]["name"]
    await provider.start(make_spec(service, namespace, env={"MODE": "b"}))
    await _done(provider, service, namespace, 2)

    with making_change(ChangeRequest(change_cause="undo")):
        rolled = await provider.rollback(service, 0, namespace=namespace)
    assert rolled.revision == 3
    await _done(provider, service, namespace, 3)
    held = replica_sets(real_kube.admin(), namespace, service)
    assert sorted(held) == [2, 3], "the controller renumbered revision 1's ReplicaSet"
    assert held[3]["metadata"]["name"] == first
    newest = (await provider.list_revisions(service, namespace=namespace))[0]
    assert (newest.number, newest.rollback_of, newest.change_cause) == (3, 1, "undo")
    assert newest.spec.env["MODE"] == "a"


def _other_writer(admin: AdminApi, namespace: str, service: str, *, template: bool) -> Any:
    """Another writer's PUT of the Deployment, straight to the API server: a label only
    (the resourceVersion moves, the revision does not: what the Deployment controller's
    status writes do all the time), or a pod-template annotation (a new revision)."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{service}"

    def write() -> None:
        current = admin.get(path)
        if template:
            current["spec"]["template"]["metadata"]["annotations"]["other"] = "x"
        else:
            current["metadata"]["labels"]["other"] = "x"
        status, answer = admin.put(path, current)
        assert status == 200, answer

    return write


async def test_a_new_revision_racing_a_checked_change_is_a_revision_conflict(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    """Another writer makes revision 2 between the provider's read and its apply (the
    proxy lets it in just before forwarding): the real server's 409 on the stale
    resourceVersion, read again, is REVISION_CONFLICT, and nothing of the change is
    applied."""
    provider = connect_url(real_kube, kube_proxy.url)
    await provider.open()
    try:
        service = unique_name()
        await provider.start(make_spec(service, namespace, env={"MODE": "a"}))
        await _done(provider, service, namespace, 1)
        writer = _other_writer(real_kube.admin(), namespace, service, template=True)
        kube_proxy.before("kube:patch deployments", writer)
        with (
            making_change(ChangeRequest(expected_revision=1)),
            pytest.raises(RevisionConflict) as conflict,
        ):
            await provider.start(make_spec(service, namespace, env={"MODE": "b"}))
        assert conflict.value.code == "ABORTED"
        assert conflict.value.metadata["current_revision"] == "2", conflict.value.message
        now = await provider.definition(service, namespace=namespace)
        assert (now.revision, now.spec.env["MODE"]) == (2, "a")
    finally:
        await provider.close()


@pytest.mark.parametrize("operation", ["start", "scale", "stop", "config", "rollback"])
async def test_a_write_of_the_same_revision_racing_a_checked_change_goes_through(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy, namespace: str, operation: str
) -> None:
    """Someone writes the Deployment's metadata between the provider's read and its
    write: the server refuses the write (409), the provider reads again, finds the
    revision the caller expected and writes once more; no REVISION_CONFLICT against a
    revision that did not move (the controller's status writes race every change)."""
    provider = connect_url(real_kube, kube_proxy.url)
    await provider.open()
    try:
        service = unique_name()
        await provider.start(make_spec(service, namespace, env={"MODE": "a"}))
        await _done(provider, service, namespace, 1)
        if operation == "rollback":
            await provider.start(make_spec(service, namespace, env={"MODE": "b"}))
            await _done(provider, service, namespace, 2)
        expected = await provider.definition(service, namespace=namespace)
        written = {"rollback": "kube:update deployments", "scale": "kube:patch deployments/scale"}
        write = written.get(operation, "kube:patch deployments")
        before = len(kube_proxy.sent(write))
        writer = _other_writer(real_kube.admin(), namespace, service, template=False)
        kube_proxy.before(write, writer)
        with making_change(ChangeRequest(expected_revision=expected.revision)):
            if operation == "start":
                await provider.start(make_spec(service, namespace, env={"MODE": "b"}))
            elif operation == "scale":
                await provider.scale(service, 2, namespace=namespace)
            elif operation == "stop":
                await provider.stop(service, namespace=namespace)
            elif operation == "config":
                await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "v"}))
            else:
                await provider.rollback(service, 1, namespace=namespace)
        assert len(kube_proxy.sent(write)) - before == 2, "one refused write, one made again"
        now = await provider.definition(service, namespace=namespace)
        labels = real_kube.admin().get(
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{service}"
        )["metadata"]["labels"]
        assert labels["other"] == "x", "the other writer's label is kept"
        if operation in ("scale", "stop"):
            status = await provider.status(service, namespace=namespace)
            wanted = 2 if operation == "scale" else 0
            assert (now.revision, status.desired_replicas) == (1, wanted)
        elif operation == "rollback":
            assert (now.revision, now.spec.env["MODE"]) == (3, "a")
        else:
            assert now.revision == 2
            assert now.spec.env["MODE"] == "b" or dict(now.config) == {"K": "v"}
    finally:
        await provider.close()


async def test_a_rollback_refused_by_a_new_revision_puts_the_config_back(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    """The rollback restores its revision's config, then its Deployment PUT meets a new
    revision (409, REVISION_CONFLICT): nothing of the rollback stays, the config
    included (pods started later would read it while the template names another)."""
    provider = connect_url(real_kube, kube_proxy.url)
    await provider.open()
    try:
        service = unique_name()
        await provider.start(make_spec(service, namespace))
        await _done(provider, service, namespace, 1)
        await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "1"}))
        await _done(provider, service, namespace, 2)
        await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "2"}))
        await _done(provider, service, namespace, 3)
        kube_proxy.before(
            "kube:update deployments",
            _other_writer(real_kube.admin(), namespace, service, template=True),
        )
        with (
            making_change(ChangeRequest(expected_revision=3)),
            pytest.raises(RevisionConflict) as conflict,
        ):
            await provider.rollback(service, 2, namespace=namespace)
        assert dict((await provider.get_config(service, namespace=namespace)).data) == {"K": "2"}
        configmap = real_kube.admin().get(
            f"/api/v1/namespaces/{namespace}/configmaps/{configmap_name(service)}"
        )
        assert configmap["data"] == {"K": "2"}
        assert "config_put_back" not in conflict.value.metadata
    finally:
        await provider.close()


@pytest.mark.parametrize("operation", ["config", "rollback"])
async def test_a_config_that_cannot_be_put_back_is_reported_live(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy, namespace: str, operation: str
) -> None:
    """The change wrote the config (a patch, or a rollback's restore), then its
    Deployment write met a new revision; before the put-back, another writer changed the
    ConfigMap on top of that data (the real server's 409 refuses the put-back). The
    caller is told the config is live, not that nothing changed."""
    provider = connect_url(real_kube, kube_proxy.url)
    await provider.open()
    try:
        service = unique_name()
        await provider.start(make_spec(service, namespace))
        await _done(provider, service, namespace, 1)
        await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "1"}))
        await _done(provider, service, namespace, 2)
        admin = real_kube.admin()
        path = f"/api/v1/namespaces/{namespace}/configmaps/{configmap_name(service)}"
        new_revision = _other_writer(admin, namespace, service, template=True)

        def write_both() -> None:
            new_revision()
            config = admin.get(path)
            config["data"] = {**(config.get("data") or {}), "OTHER": "x"}
            status, answer = admin.put(path, config)
            assert status == 200, answer

        with making_change(ChangeRequest(expected_revision=2)):
            if operation == "config":
                kube_proxy.before("kube:patch deployments", write_both)
                with pytest.raises(RevisionConflict) as conflict:
                    await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": "2"}))
                written = {"K": "2"}
            else:
                kube_proxy.before("kube:update deployments", write_both)
                with pytest.raises(RevisionConflict) as conflict:
                    await provider.rollback(service, 1, namespace=namespace)
                written = {}
        assert conflict.value.metadata["config_put_back"] == "false"
        assert conflict.value.metadata["current_revision"] == "3"
        assert "could not be put back" in conflict.value.message
        assert admin.get(path)["data"] == {**written, "OTHER": "x"}, "the other write stays"
    finally:
        await provider.close()


async def test_a_crashing_image_fails_with_crash_loop_at_the_deadline(
    provider: KubernetesProvider, namespace: str
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, namespace))
    await _done(provider, service, namespace, 1)
    crashing = replace(
        make_spec(service, namespace), image=CRASHING_IMAGE, progress_deadline_seconds=5
    )
    await provider.start(crashing)
    status = await wait_for(provider, service, namespace, rollout_done(2))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "CRASH_LOOP", status.rollout
    assert "CrashLoopBackOff" in status.rollout.message
    assert status.observed_revision == 1 and status.ready_replicas == 1
    progressing = {c.type: c for c in status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == (False, "ProgressDeadlineExceeded")


async def test_history_is_bounded_by_the_revision_history_limit(
    provider: KubernetesProvider, namespace: str
) -> None:
    service = unique_name()
    changes = REVISION_HISTORY_LIMIT + 3
    for number in range(1, changes + 1):
        await provider.start(make_spec(service, namespace, env={"N": str(number)}))
        await _done(provider, service, namespace, number)
    kept = list(range(changes, changes - REVISION_HISTORY_LIMIT - 1, -1))
    # The controller deletes the oldest scaled-down ReplicaSets beyond the limit, in a
    # sync of its own after the rollout completed: a moment later on a loaded machine.
    history = await until(
        lambda: provider.list_revisions(service, namespace=namespace),
        f"at most {len(kept)} revisions",
        holds=lambda found: len(found) <= len(kept),
        within=60,
        every=0.5,
    )
    assert [r.number for r in history] == kept
