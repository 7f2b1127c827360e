"""``procs``: an example third-party alphaswarm provider.

Each replica is a child process of the server, in a session of its own, running
``spec.command`` (never through a shell). Nothing is persisted: a server restart
forgets every deployment (its replicas die with it). It implements the required
methods only, so ``config`` and ``metrics`` are UNIMPLEMENTED and ``watch`` is the
base class's polling.

It is an example of the plugin mechanism, not a hardened runner: replicas run as
the server's user. It refuses to run them as root unless ALPHASWARM_PROCS_ALLOW_ROOT
is true; the built-in ``local`` provider is the one with a trust boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
from dataclasses import dataclass, field

from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendRejectedError,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InfrastructureProvider,
    InfrastructureProviderUnavailable,
    InstanceStatus,
    ProviderHealth,
)

STOP_GRACE_SECONDS = 5.0
_ids = itertools.count(1)


@dataclass
class _Deployment:
    spec: DeploymentSpec
    replicas: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


class ProcsProvider(InfrastructureProvider):
    provider_kind = "procs"
    provider_alias = "procs"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # Read settings here (no I/O): a bad value fails the provider's first call.
        self.allow_root = self.setting_bool("ALLOW_ROOT", False)
        self._deployments: dict[tuple[str, str], _Deployment] = {}
        self._lock = asyncio.Lock()

    # -- required ---------------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        self._check_credentials()
        running = sum(len(d.processes) for d in self._deployments.values())
        return ProviderHealth(
            self.provider_alias, self.provider_kind, True, f"{running} replicas running"
        )

    def _check_credentials(self) -> None:
        if os.geteuid() == 0 and not self.allow_root:
            raise InfrastructureProviderUnavailable(
                "procs would run replicas as root; run the server as another user, "
                f"or set {self.setting_name('ALLOW_ROOT')}=true on purpose",
                metadata={"setting": self.setting_name("ALLOW_ROOT")},
            )

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        if not spec.command:
            raise BackendRejectedError("procs runs commands: spec.command is required")
        self._check_credentials()
        async with self._lock:
            key = (spec.namespace, spec.service_id)
            current = self._deployments.get(key)
            if current is not None and current.spec != spec:
                await self._resize(current, 0)  # a changed spec replaces every replica
            if current is None or current.spec != spec:
                current = self._deployments[key] = _Deployment(spec, spec.replicas)
            current.replicas = spec.replicas
            await self._resize(current, spec.replicas)
            return self._status(current)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.scale(service_id, 0, namespace=namespace)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        async with self._lock:
            deployment = self._get(service_id, namespace)
            deployment.replicas = replicas
            await self._resize(deployment, replicas)
            return self._status(deployment)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return self._status(self._get(service_id, namespace))

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        return [
            self._status(d)
            for (ns, _), d in sorted(self._deployments.items())
            if namespace is None or ns == namespace
        ]

    async def close(self) -> None:
        for deployment in self._deployments.values():
            await self._resize(deployment, 0)

    # -- helpers ----------------------------------------------------------------------------

    def _get(self, service_id: str, namespace: str) -> _Deployment:
        deployment = self._deployments.get((namespace, service_id))
        if deployment is None:
            raise DeploymentNotFoundError(service_id, namespace)
        return deployment

    async def _resize(self, deployment: _Deployment, replicas: int) -> None:
        for name, process in list(deployment.processes.items()):
            if process.poll() is not None:  # died: replaced below
                del deployment.processes[name]
        while len(deployment.processes) < replicas:
            name = f"{deployment.spec.service_id}-{next(_ids)}"
            deployment.processes[name] = await self.run_blocking(_spawn, deployment.spec)
        while len(deployment.processes) > replicas:
            name = sorted(deployment.processes)[-1]
            await self.run_blocking(_terminate, deployment.processes.pop(name))

    def _status(self, deployment: _Deployment) -> DeploymentStatus:
        instances = tuple(
            InstanceStatus(name, "running" if p.poll() is None else "exited", p.poll() is None)
            for name, p in sorted(deployment.processes.items())
        )
        ready = sum(1 for i in instances if i.ready)
        if deployment.replicas == 0:
            state = DeploymentState.STOPPED
        elif ready == deployment.replicas:
            state = DeploymentState.RUNNING
        else:
            state = DeploymentState.PENDING
        return DeploymentStatus(
            service_id=deployment.spec.service_id,
            namespace=deployment.spec.namespace,
            provider=self.provider_alias,
            state=state,
            desired_replicas=deployment.replicas,
            ready_replicas=ready,
            instances=instances,
        )


def _spawn(spec: DeploymentSpec) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(spec.command),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop reaches its children
        )
    except OSError as exc:
        raise BackendRejectedError(f"cannot run {spec.command[0]!r}: {exc.strerror}") from exc


def _terminate(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
