"""Run ``alphaswarm-server`` as an unprivileged user: ``python -m tests.e2e.as_user UID GID``.

The interpreter running the tests may sit where that user cannot read (e.g.
under /root), so everything the server imports is loaded first, as root; then
the process drops to UID:GID for good and serves. It then looks like a server
its user started: the kernel marks a process that changed its uid as not
dumpable, which a server started by that user is not, so that mark is undone.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys

PRELOAD = (
    "alphaswarm_controller.main",
    "alphaswarm_controller.server",
    "alphaswarm_controller.providers.local",
    "alphaswarm_controller.providers.local.provider",
    "alphaswarm_controller.observability",
    "sqlite3",
    "json",
    "encodings.idna",
    "logging.handlers",
    "concurrent.futures.thread",
    "asyncio.unix_events",
    "importlib.readers",
    "importlib.resources",
    "importlib.metadata",  # the entry-point scan, after the port serves
    "alphaswarm_controller.reflection",
)
_PR_SET_DUMPABLE = 4


def main() -> None:
    uid, gid = int(sys.argv[1]), int(sys.argv[2])
    for name in PRELOAD:
        importlib.import_module(name)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    os.chdir("/")
    from alphaswarm_controller.main import main as serve

    serve(["serve"])


if __name__ == "__main__":
    main()
