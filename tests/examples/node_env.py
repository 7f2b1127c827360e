"""A Node.js toolchain with examples/node's packages installed from its lock file."""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = REPO / "examples" / "node"
LOCK_FILE = NODE_EXAMPLE / "package-lock.json"
# Written after a successful `npm ci`; holds the digest of the manifest and lock it
# installed, so a changed package-lock.json re-installs and an unchanged one does not.
STAMP = NODE_EXAMPLE / "node_modules" / ".alphaswarm-npm-ci.sha256"
MIN_NODE_MAJOR = 20


@dataclass(frozen=True)
class NodeExample:
    """The node binary and the example's entry point, ready to run."""

    node: str
    client: Path

    def command(self, *args: str) -> list[str]:
        return [self.node, str(self.client), *args]


def lock_digest() -> str:
    digest = hashlib.sha256()
    for path in (NODE_EXAMPLE / "package.json", LOCK_FILE):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def require_tool(name: str) -> str:
    """The tool's path; a missing tool FAILS the test (CI provides Node.js 20 and npm)."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not on PATH: the Node.js example needs Node.js >= {MIN_NODE_MAJOR} "
            "and npm (e.g. `apt-get install nodejs npm` or https://nodejs.org)",
            pytrace=False,
        )
    return found


def prepare_node_example() -> NodeExample:
    """Check Node.js >= 20 and run `npm ci` when node_modules is missing or stale."""
    node = require_tool("node")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    match = re.fullmatch(r"v(\d+)\..*", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        pytest.fail(
            f"the Node.js example needs Node.js >= {MIN_NODE_MAJOR}, found {version}",
            pytrace=False,
        )
    # npm ci deletes node_modules first: two test runs at once must not interleave.
    # The advisory lock sits on package-lock.json, which npm ci only reads.
    with LOCK_FILE.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        wanted = lock_digest()
        if not (STAMP.exists() and STAMP.read_text().strip() == wanted):
            installed = subprocess.run(
                [require_tool("npm"), "ci", "--no-audit", "--no-fund"],
                cwd=NODE_EXAMPLE,
                capture_output=True,
                text=True,
                check=False,
                timeout=240,
            )
            if installed.returncode != 0:
                pytest.fail(
                    f"npm ci failed in {NODE_EXAMPLE}:\n{installed.stdout}{installed.stderr}",
                    pytrace=False,
                )
            STAMP.write_text(wanted + "\n")
    return NodeExample(node, NODE_EXAMPLE / "client.mjs")
