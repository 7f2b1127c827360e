"""Config in Secret Manager: versions, conflicts, the 64 KiB payload limit, no partial apply."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from google.cloud import secretmanager_v1 as sm

from alphaswarm_controller.providers.gcp import CloudRunProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name, pinned_version
from alphaswarm_controller.providers.gcp.config import VERSION_LABEL, SecretConfigStore
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    ConfigVersionConflict,
    InvalidSpecError,
    ServiceConfig,
)
from alphaswarm_core.testing import SpecFactory
from tests.fakes.faults import Kind
from tests.fakes.gcp_auth import PROJECT
from tests.fakes.gcp_server import GcpEmulator


def _secret(namespace: str, service_id: str) -> str:
    return f"projects/{PROJECT}/secrets/alphaswarm-{cloud_run_name(namespace, service_id)}"


def _revisions(emulator: GcpEmulator, namespace: str, service_id: str) -> list[str]:
    short = cloud_run_name(namespace, service_id)
    (name,) = [n for n in emulator.run.revisions if n.endswith(f"/{short}")]
    return emulator.run.revisions[name]


async def test_config_lives_in_one_secret_referenced_by_the_service(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    spec = cloud_run_specs("cfg", namespace, replicas=1)
    await cloud_run.start(spec)
    first = await cloud_run.apply_config(ConfigMapPatch("cfg", namespace, set={"A": "1"}))
    second = await cloud_run.apply_config(
        ConfigMapPatch("cfg", namespace, set={"B": "2"}, expected_version=first.version)
    )
    assert (first.version, second.version) == ("1", "2")

    secret = _secret(namespace, "cfg")
    assert [json.loads(data) for _, data in emulator.secrets.versions[secret]] == [
        {"A": "1"},
        {"A": "1", "B": "2"},
    ]
    short = cloud_run_name(namespace, "cfg")
    service = next(s for s in emulator.run.services.values() if s.name.endswith(short))
    (container,) = service.template.containers
    (ref,) = [e for e in container.env if e.name == "ALPHASWARM_CONFIG"]
    assert (ref.value_source.secret_key_ref.secret, ref.value_source.secret_key_ref.version) == (
        secret,
        "2",
    )
    assert len(_revisions(emulator, namespace, "cfg")) == 3, "each version rolls a revision"

    with pytest.raises(ConfigVersionConflict):
        await cloud_run.apply_config(
            ConfigMapPatch("cfg", namespace, set={"B": "x"}, expected_version="1")
        )
    assert len(emulator.secrets.versions[secret]) == 2, "a conflict writes nothing"

    await cloud_run.start(spec)
    assert len(_revisions(emulator, namespace, "cfg")) == 3, "start keeps the config reference"
    assert (await cloud_run.get_config("cfg", namespace=namespace)).data == {"A": "1", "B": "2"}


async def test_a_config_over_64_kib_is_rejected_before_anything_is_written(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    # Issue 17: the model allows 512 KiB, one Secret Manager version holds 64 KiB; the
    # oversized write used to fail after the version label had been moved.
    await cloud_run.start(cloud_run_specs("big", namespace))
    base = await cloud_run.apply_config(ConfigMapPatch("big", namespace, set={"A": "1"}))
    secret = _secret(namespace, "big")
    label = emulator.secrets.secrets[secret].labels[VERSION_LABEL]
    claims = emulator.faults.count("secretmanager:UpdateSecret")
    updates = emulator.faults.count("run:UpdateService")

    large = {"ONE": "x" * 40_000, "TWO": "y" * 40_000}  # each value within the model's limit
    with pytest.raises(InvalidSpecError) as caught:
        await cloud_run.apply_config(
            ConfigMapPatch("big", namespace, set=large, expected_version=base.version)
        )
    assert [v.field for v in caught.value.violations] == ["patch.set"]
    assert "65536" in caught.value.violations[0].description
    assert emulator.secrets.secrets[secret].labels[VERSION_LABEL] == label, "no claim"
    assert emulator.faults.count("secretmanager:UpdateSecret") == claims
    assert len(emulator.secrets.versions[secret]) == 1, "no version added"
    assert emulator.faults.count("run:UpdateService") == updates, "no revision rolled"
    assert (await cloud_run.get_config("big", namespace=namespace)).version == base.version


async def test_concurrent_writers_of_one_version_one_wins(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("race", namespace))
    base = await cloud_run.apply_config(ConfigMapPatch("race", namespace, set={"N": "0"}))
    for round_ in range(5):  # several rounds: the interleaving is the event loop's
        results = await asyncio.gather(
            *(
                cloud_run.apply_config(
                    ConfigMapPatch(
                        "race", namespace, set={"N": f"{round_}.{n}"}, expected_version=base.version
                    )
                )
                for n in (1, 2)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(r, ConfigVersionConflict) for r in results) == 1, results
        (winner,) = [r for r in results if not isinstance(r, BaseException)]
        assert (await cloud_run.get_config("race", namespace=namespace)) == winner
        base = winner


class _PausingClient:
    """The Secret Manager client, except that the first ``method`` call waits for ``go``:
    another writer can act at that point of this one's write."""

    def __init__(self, client: sm.SecretManagerServiceAsyncClient, method: str) -> None:
        self._client, self._method = client, method
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._method or self.reached.is_set():
            return real

        async def paused(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.go.wait()
            return await real(*args, **kwargs)

        return paused


@pytest.mark.parametrize("paused_before", ["add_secret_version", "update_secret"])
async def test_a_writer_that_reads_while_another_writes_loses_and_its_version_is_destroyed(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
    paused_before: str,
) -> None:
    # A loaded run once saw both writers of one version win: the second read between the
    # first's steps. Here the second reads at each step of the first, then writes.
    service_id = f"late-{paused_before[:3]}"
    await cloud_run.start(cloud_run_specs(service_id, namespace))
    await cloud_run.apply_config(ConfigMapPatch(service_id, namespace, set={"N": "1"}))
    short = cloud_run_name(namespace, service_id)
    store = await cloud_run._store()
    client = _PausingClient(store.client, paused_before)
    paused = SecretConfigStore(cast(sm.SecretManagerServiceAsyncClient, client), store.project)

    first = asyncio.create_task(
        paused.write(short, namespace, service_id, await store.read(short), {"N": "first"})
    )
    await asyncio.wait_for(client.reached.wait(), 30)
    second = await store.read(short)
    client.go.set()
    won = await first
    with pytest.raises(ConfigVersionConflict) as caught:
        await store.write(short, namespace, service_id, second, {"N": "second"})
    assert caught.value.metadata == {"expected_version": "1", "current_version": won}

    secret = _secret(namespace, service_id)
    assert emulator.secrets.secrets[secret].labels[VERSION_LABEL] == won
    (lost,) = [
        v for v, _ in emulator.secrets.versions[secret] if int(v.name.rsplit("/", 1)[1]) > int(won)
    ]
    assert lost.state == sm.SecretVersion.State.DESTROYED, "the loser's data is not kept"
    assert (await store.read(short)).data == {"N": "first"}


async def test_a_patch_without_expected_version_that_loses_the_race_merges_again(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await cloud_run.start(cloud_run_specs("keys", namespace))
    store = await cloud_run._store()
    client = _PausingClient(store.client, "update_secret")
    paused = SecretConfigStore(cast(sm.SecretManagerServiceAsyncClient, client), store.project)

    async def the_paused_store() -> SecretConfigStore:
        return paused

    monkeypatch.setattr(cloud_run, "_store", the_paused_store)
    first = asyncio.create_task(
        cloud_run.apply_config(ConfigMapPatch("keys", namespace, set={"A": "1"}))
    )
    await asyncio.wait_for(client.reached.wait(), 30)
    await cloud_run.apply_config(ConfigMapPatch("keys", namespace, set={"B": "2"}))
    client.go.set()
    merged = await first
    assert merged.data == {"A": "1", "B": "2"}
    await _runs_and_shows(cloud_run, emulator, namespace, merged)


class _StoreThatPausesAfterItsFirstWrite(SecretConfigStore):
    def __init__(self, store: SecretConfigStore) -> None:
        super().__init__(store.client, store.project)
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def write(self, *args: Any, **kwargs: Any) -> str:
        version = await super().write(*args, **kwargs)
        if not self.reached.is_set():
            self.reached.set()
            await self.go.wait()
        return version


def _pause_after_first_write(
    cloud_run: CloudRunProvider, store: SecretConfigStore, monkeypatch: pytest.MonkeyPatch
) -> _StoreThatPausesAfterItsFirstWrite:
    pausing = _StoreThatPausesAfterItsFirstWrite(store)

    async def the_pausing_store() -> SecretConfigStore:
        return pausing

    monkeypatch.setattr(cloud_run, "_store", the_pausing_store)
    return pausing


async def _runs_and_shows(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, namespace: str, config: ServiceConfig
) -> None:
    """The service pins ``config``'s version and GetConfig shows ``config``."""
    assert await cloud_run.get_config(config.service_id, namespace=namespace) == config
    short = cloud_run_name(namespace, config.service_id)
    service = next(s for s in emulator.run.services.values() if s.name.endswith(short))
    pinned = pinned_version(service.template.containers)
    assert pinned == (_secret(namespace, config.service_id), config.version)


async def test_a_pin_that_comes_after_a_later_writes_pin_leaves_the_later_one(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A names version 2 and is slow to pin it; B names version 3 and pins it. A's pin
    # must not move the service back to 2 while GetConfig shows 3.
    await cloud_run.start(cloud_run_specs("slow", namespace))
    await cloud_run.apply_config(ConfigMapPatch("slow", namespace, set={"N": "1"}))
    pausing = _pause_after_first_write(cloud_run, await cloud_run._store(), monkeypatch)
    first = asyncio.create_task(
        cloud_run.apply_config(ConfigMapPatch("slow", namespace, set={"N": "A"}))
    )
    await asyncio.wait_for(pausing.reached.wait(), 30)
    later = await cloud_run.apply_config(ConfigMapPatch("slow", namespace, set={"N": "B"}))
    pausing.go.set()
    earlier = await first
    assert (earlier.version, later.version) == ("2", "3")

    await _runs_and_shows(cloud_run, emulator, namespace, later)


async def test_a_rollback_whose_pin_comes_after_a_later_write_keeps_the_later_config(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await cloud_run.start(cloud_run_specs("back", namespace))  # revision 1
    await cloud_run.apply_config(ConfigMapPatch("back", namespace, set={"N": "1"}))  # 2, v1
    await cloud_run.apply_config(ConfigMapPatch("back", namespace, set={"N": "2"}))  # 3, v2
    pausing = _pause_after_first_write(cloud_run, await cloud_run._store(), monkeypatch)
    rollback = asyncio.create_task(cloud_run.rollback("back", 2, namespace=namespace))
    await asyncio.wait_for(pausing.reached.wait(), 30)  # v3 holds revision 2's {"N": "1"}
    later = await cloud_run.apply_config(ConfigMapPatch("back", namespace, set={"N": "3"}))
    pausing.go.set()
    await rollback
    assert later.version == "4"
    await _runs_and_shows(cloud_run, emulator, namespace, later)


async def test_a_write_whose_version_never_arrived_changes_nothing_and_a_retry_completes(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("half", namespace))
    base = await cloud_run.apply_config(ConfigMapPatch("half", namespace, set={"A": "1"}))
    emulator.faults.clear()
    emulator.faults.inject("secretmanager:AddSecretVersion", Kind.DENIED)
    with pytest.raises(Exception, match="denied"):
        await cloud_run.apply_config(
            ConfigMapPatch("half", namespace, set={"A": "2"}, expected_version=base.version)
        )
    # The previous config is still what is read, and a retry of the same write completes.
    assert (await cloud_run.get_config("half", namespace=namespace)).data == {"A": "1"}
    done = await cloud_run.apply_config(
        ConfigMapPatch("half", namespace, set={"A": "2"}, expected_version=base.version)
    )
    assert done.data == {"A": "2"} and done.version == "2"
