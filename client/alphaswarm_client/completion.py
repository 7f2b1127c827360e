"""Shell completion for bash, zsh and fish, generated from the parser by argcomplete.

``alphaswarm completion bash|zsh|fish`` prints the script to source; the shell
then runs ``alphaswarm`` itself with argcomplete's environment on each TAB, so
commands, flags and choices always match this version's parser. Service names
are completed from the server with one ListDeployments call (one page, a
short deadline, through the same connection settings and context as the
command line); so are the revision numbers of ``rollout undo --to-revision`` (one
ListRevisions call). When the server cannot be reached nothing is offered.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

SHELLS = ("bash", "zsh", "fish")
PROGRAM = "alphaswarm"
COMPLETION_TIMEOUT = 2.0
"""Seconds a TAB may wait for the server's service names."""
COMPLETION_PAGE = 200


def requested() -> bool:
    """Whether the shell runs this process to complete a command line."""
    return "_ARGCOMPLETE" in os.environ


def autocomplete(build_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Answer a completion request and exit, when the shell asked for one."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(build_parser(), always_complete_options="long")


class ServiceNames:
    """argcomplete completer: the names of the deployments in the namespace."""

    def __call__(self, prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        try:
            return [name for name in self._names(parsed_args) if name.startswith(prefix)]
        except Exception:  # a TAB must never print a traceback
            return []

    @staticmethod
    def _names(parsed_args: argparse.Namespace) -> list[str]:
        from alphaswarm.provider.v1 import provider_service_pb2 as pb

        def ask(stub: Any, args: argparse.Namespace, metadata: Any) -> list[str]:
            response = stub.ListDeployments(
                pb.ListDeploymentsRequest(
                    provider=args.provider,
                    namespace=args.namespace or "default",
                    page_size=COMPLETION_PAGE,
                ),
                timeout=COMPLETION_TIMEOUT,
                metadata=metadata,
            )
            return sorted({d.service_id for d in response.deployments})

        return _ask_server(parsed_args, ask)


class RevisionNumbers:
    """argcomplete completer: the revision numbers of the service on the line, newest
    first (one ListRevisions page)."""

    def __call__(self, prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        try:
            return [n for n in self._numbers(parsed_args) if n.startswith(prefix)]
        except Exception:  # a TAB must never print a traceback
            return []

    @staticmethod
    def _numbers(parsed_args: argparse.Namespace) -> list[str]:
        from alphaswarm.provider.v1 import provider_service_pb2 as pb

        service_id = getattr(parsed_args, "service_id", None)
        if not service_id:
            return []

        def ask(stub: Any, args: argparse.Namespace, metadata: Any) -> list[str]:
            response = stub.ListRevisions(
                pb.ListRevisionsRequest(
                    provider=args.provider,
                    service_id=service_id,
                    namespace=args.namespace or "default",
                    page_size=COMPLETION_PAGE,
                ),
                timeout=COMPLETION_TIMEOUT,
                metadata=metadata,
            )
            return [str(r.number) for r in response.revisions]

        return _ask_server(parsed_args, ask)


def _ask_server(
    parsed_args: argparse.Namespace, ask: Callable[[Any, argparse.Namespace, Any], list[str]]
) -> list[str]:
    """``ask(stub, args, metadata)`` over a channel made from the command line's
    connection settings (flags, environment, context), closed afterwards."""
    import grpc

    from alphaswarm.provider.v1 import provider_service_pb2_grpc
    from alphaswarm_client import cli

    args = argparse.Namespace(**vars(parsed_args))
    for key in (
        "context",
        "target",
        "provider",
        "namespace",
        "timeout",
        "output",
        "tls",
        "ca_cert",
        "client_cert",
        "client_key",
        "tls_server_name",
        "token",
    ):
        if not hasattr(args, key):
            setattr(args, key, None)
    cli.resolve(args)
    credentials = cli.channel_credentials(args)
    options = (
        [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    )
    channel = (
        grpc.secure_channel(args.target, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(args.target, options=options)
    )
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    with channel:
        return ask(provider_service_pb2_grpc.ProviderServiceStub(channel), args, metadata)


async def cmd_completion(client: Any, args: argparse.Namespace, out: Any) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode([PROGRAM], shell=args.shell))
    sys.stdout.flush()
    return 0
