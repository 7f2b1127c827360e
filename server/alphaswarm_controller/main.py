"""``alphaswarm-server``: configuration from the environment (see settings.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

# The local provider forks replica processes; gRPC's fork handlers are for
# children that use gRPC, which replicas never do (they exec at once).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from .server import serve
from .settings import ServerSettings


def main() -> None:
    settings = ServerSettings.from_env()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
