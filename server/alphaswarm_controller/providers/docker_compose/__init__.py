"""The ``docker_compose`` provider: Compose-compatible services on a Docker engine.

The registry loads ``alphaswarm_controller.providers.docker_compose:DockerComposeProvider``;
importing this package imports the docker SDK (the ``docker_compose`` extra).
"""

from __future__ import annotations

from .provider import DockerComposeProvider

__all__ = ["DockerComposeProvider"]
