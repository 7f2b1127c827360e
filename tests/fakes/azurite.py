"""Azurite, Microsoft's Azure Storage emulator, as the Blob Storage of ACI revision records.

The blob service (``azurite-blob`` from the npm package, installed by
scripts/azurite/install.sh; ``ALPHASWARM_AZURITE`` names it, scripts/test.sh exports
it) runs on a free port of 127.0.0.1, in memory, with a private temp dir as its
working directory, and is stopped (and the dir removed) when the fixture ends. Without
it the tests fail and say which command installs it: a missing backend is a failure,
never a skip. Azurite's account is its documented well-known development account
(learn.microsoft.com/azure/storage/common/storage-use-azurite, "Well-known storage
account and key"), not a secret.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = "ALPHASWARM_AZURITE"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 120.0
"""Node loads about a thousand modules before Azurite listens: 2-4 s on an idle machine,
over 30 s once (no output yet) while the full run and the provider matrix shared two
cores with a CPU hog."""
_LISTENING = re.compile(r"successfully listens on (http://127\.0\.0\.1:[0-9]{1,5})")


def azurite_binary() -> Path:
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured)
    found = subprocess.run(
        ["bash", str(REPO / "scripts" / "azurite" / "install.sh"), "--if-built"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise RuntimeError(f"Azurite is not installed: run bash scripts/azurite/install.sh ({ENV})")
    return Path(found.stdout.strip())


def connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint}/{ACCOUNT};"
    )


@contextmanager
def azurite_blob() -> Iterator[str]:
    """A running Azurite blob service; yields its connection string."""
    binary = azurite_binary()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    output = Path(workdir, "out.log")
    with output.open("w") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--extentMemoryLimit",
                "64",
                "--disableProductStyleUrl",
                # azure-storage-blob's newest API version may be newer than Azurite's
                # (it answers 400 InvalidHeaderValue and names this flag).
                "--skipApiVersionCheck",
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        endpoint = _await_listening(process, output)
        yield connection_string(endpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _await_listening(process: subprocess.Popen[bytes], output: Path) -> str:
    started = time.monotonic()
    while time.monotonic() < started + START_TIMEOUT:
        match = _LISTENING.search(output.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    ended = (
        f"exited with {process.returncode}"
        if process.poll() is not None
        else f"not listening after {time.monotonic() - started:.0f} s"
    )
    raise RuntimeError(
        f"Azurite did not start ({ended}): {output.read_text(errors='replace')[-2000:]}"
    )
