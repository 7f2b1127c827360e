"""``alphaswarm-server``: serve (configured from the environment, see settings.py),
or one of the helper commands for securing it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

# The local provider forks replica processes; gRPC's fork handlers are for
# children that use gRPC, which replicas never do (they exec at once).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from .observability import configure_logging
from .security.tokens import TokensFileError, hash_token, new_token
from .server import serve
from .settings import ServerSettings


def _version() -> str:
    import importlib.metadata  # only for --version: not on the way to serving

    try:
        return importlib.metadata.version("alphaswarm-controller")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, read from the installed metadata only when asked (a server that has
    dropped privileges may no longer import what reading it needs)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help="print the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"alphaswarm-server {_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphaswarm-server",
        description="Serve alphaswarm.provider.v1.ProviderService (settings: ALPHASWARM_CP_*).",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the server (the default)")
    token = commands.add_parser("new-token", help="print a new bearer token and its file entry")
    token.add_argument("--name", required=True)
    token.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    commands.add_parser("hash-token", help="print the sha256 of the token read from stdin")
    certs = commands.add_parser("make-dev-certs", help="write a dev CA, server and client certs")
    certs.add_argument("directory", type=Path)
    certs.add_argument("--host", action="append", default=[], help="extra server name or IP")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "new-token":
        token = new_token()
        print(f"token (shown once): {token}")
        print("tokens-file entry:")
        print(f"  - name: {args.name}\n    sha256: {hash_token(token)}\n    role: {args.role}")
        return
    if args.command == "hash-token":
        print(hash_token(sys.stdin.read().strip()))
        return
    if args.command == "make-dev-certs":
        from .security.devcerts import make_dev_certs

        certs = make_dev_certs(args.directory, hosts=tuple(args.host))
        print(f"wrote {certs.ca}, {certs.server_cert}, {certs.client_cert} and keys")
        return
    settings = ServerSettings.from_env()
    configure_logging(settings.log_level, settings.log_format, sys.stderr)
    try:
        code = asyncio.run(serve(settings))
    except TokensFileError as error:
        # One line that names the file, the entry and the field; a traceback would
        # bury it. Exit status 1, like every other refused setting.
        print(f"alphaswarm-server: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if code:  # a second signal: no waiting for worker threads either
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
