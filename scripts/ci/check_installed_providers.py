"""Check a venv that holds alphaswarm-controller with some extras, and nothing else.

Run with that venv's interpreter (scripts/ci/provider_matrix.py does, before any test
tool is installed there)::

    python scripts/ci/check_installed_providers.py --installed local,aws,kubernetes

1. Every module of every provider expected to be installed imports: a dependency the
   extra forgot fails here, with the module that needed it.
2. The real server starts (``python -m alphaswarm_controller``, port 0, a temp state
   dir) and ListProviders reports exactly the expected providers as installed, each
   with capabilities, and every other one as not installed with its install hint.
3. The server stops on SIGTERM with exit code 0.

Uses only what the server itself depends on (grpcio and the generated stubs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc

DISTRIBUTION = "alphaswarm-controller"
LISTENING = re.compile(r"listening on (\S+):(\d+)")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def import_every_module(alias: str) -> int:
    """Import the provider package and all its submodules; the number imported."""
    package = importlib.import_module(f"alphaswarm_controller.providers.{alias}")
    count = 1
    for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        importlib.import_module(module.name)
        count += 1
    return count


def serve_and_list(state_dir: Path) -> pb.ListProvidersResponse:
    env = {
        **os.environ,
        "ALPHASWARM_CP_LISTEN": "127.0.0.1:0",
        "ALPHASWARM_CP_STATE_DIR": str(state_dir),
        "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS": "5",
        "PYTHONUNBUFFERED": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "alphaswarm_controller"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        address = None
        while address is None:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise SystemExit(
                    f"the server did not listen within {START_TIMEOUT:.0f} s:\n" + "".join(log)
                ) from None
            if line is None:
                raise SystemExit("the server exited before listening:\n" + "".join(log))
            log.append(line)
            if match := LISTENING.search(line):
                address = f"{match.group(1)}:{match.group(2)}"
        with grpc.insecure_channel(address) as channel:
            response: pb.ListProvidersResponse = pb_grpc.ProviderServiceStub(channel).ListProviders(
                pb.ListProvidersRequest(), timeout=60
            )
        server.send_signal(signal.SIGTERM)
        code = server.wait(STOP_TIMEOUT)
        if code != 0:
            raise SystemExit(f"the server exited with {code} on SIGTERM:\n" + "".join(log))
        return response
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def problems(response: pb.ListProvidersResponse, expected: set[str]) -> list[str]:
    found = []
    listed = {info.alias: info for info in response.providers}
    for alias in sorted(expected - listed.keys()):
        found.append(f"{alias}: not listed")
    for alias, info in sorted(listed.items()):
        if alias in expected:
            if not info.installed:
                found.append(f"{alias}: expected installed, listed as not: {info.install_hint}")
            elif not info.capabilities:
                found.append(f"{alias}: installed but lists no capabilities")
        else:
            hint = f"pip install '{DISTRIBUTION}[{alias}]'"
            if info.installed:
                found.append(f"{alias}: listed as installed, but its extra is not")
            elif info.install_hint != hint:
                found.append(f"{alias}: install hint {info.install_hint!r}, expected {hint!r}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--installed", required=True, help="comma list: the providers this venv should have"
    )
    args = parser.parse_args()
    expected = {alias for alias in args.installed.split(",") if alias}
    for alias in sorted(expected):
        print(f"import: {alias}: {import_every_module(alias)} module(s)")
    with tempfile.TemporaryDirectory(prefix="asw-check-") as state:
        response = serve_and_list(Path(state))
    for info in response.providers:
        state_text = (
            f"installed ({', '.join(info.capabilities)})"
            if info.installed
            else f"not installed: {info.install_hint}"
        )
        print(f"ListProviders: {info.alias}: {state_text}")
    found = problems(response, expected)
    if found:
        raise SystemExit("ListProviders is wrong:\n  " + "\n  ".join(found))
    print("server: started, listed, stopped with 0")


if __name__ == "__main__":
    main()
