"""``alphaswarm``: the command-line client of ProviderService.

Exit codes: 0 success, 1 the server (or the network) refused the call, 2 a
usage error (bad flags, unreadable spec file, bad context), 3 outcome unknown
(a change whose deadline expired: the server may have applied it; check with
``status``; or a rollout still in progress when ``--wait-timeout`` ended the
wait), 4 the change was made but its rollout FAILED (``--wait``, ``rollout
status``; the reason on stderr), 130 interrupted (Ctrl-C, SIGINT), 143 terminated (SIGTERM), 141
stdout closed early (``| head``). Errors are one line on stderr:
``error: CODE: message (reason=...; field: why)``.

SIGINT and SIGTERM end any command, streams included, cleanly (the call is
cancelled, nothing is printed) even when the parent started the CLI with them
ignored (``cmd &`` in a script, some CI runners): Python would then install no
handler of its own, so the CLI installs both itself.

Connection settings come from, in order: flags, the ``ALPHASWARM_*``
environment, the current context of the config file (contexts.py), defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from alphaswarm_client import commands, completion, rollouts, streaming
from alphaswarm_client.client import AlphaswarmClient
from alphaswarm_client.commands import Handler
from alphaswarm_client.contexts import ConfigFile, Context, ContextError, config_path
from alphaswarm_client.errors import AlphaswarmError
from alphaswarm_client.exits import (
    EXIT_OUTCOME_UNKNOWN,
    EXIT_ROLLOUT_FAILED,
    EXIT_RPC_ERROR,
    EXIT_USAGE,
    UsageError,
)
from alphaswarm_client.output import Format, Output
from alphaswarm_client.specfile import DEFAULT_REPLICAS, SpecError, parse_key_value, parse_port

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141
#: The signals that end a command, and its exit code for each (128 + the signal number).
EXIT_ON_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}

__all__ = [
    "EXIT_OUTCOME_UNKNOWN",
    "EXIT_ROLLOUT_FAILED",
    "EXIT_RPC_ERROR",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "build_spec",
    "main",
    "make_client",
    "parse_args",
]

build_spec = commands.build_spec


def version() -> str:
    try:
        return importlib.metadata.version("alphaswarm-controller")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- argument parsing ----------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """Options may come between positionals (``config set web --expected-version 3 A=1``).

    argparse's intermixed parsing does not support subparsers, so each command's
    own parser (a leaf) parses intermixed, and the parsers above it dispatch.
    """

    _intermixed_now = False
    intermixed = True
    """False while completing: argcomplete parses a partial line, and an intermixed parse
    that fails (an option still waiting for its value) keeps none of the positionals,
    which the completers of option values need (the service of ``--to-revision``)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.intermixed or self._intermixed_now or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixed_now = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed_now = False


def _key_value(text: str) -> tuple[str, str]:
    try:
        return parse_key_value(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _port(text: str) -> Any:
    try:
        return parse_port(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _expected_revision(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a revision number, got {text!r}") from None
    if value < -1:
        raise argparse.ArgumentTypeError("a revision number, or -1 for 'must not exist yet'")
    return value


def _change_cause(text: str) -> str:
    try:
        return rollouts.change_cause(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--change-cause: ")) from None


def _change_flags(
    sub: argparse.ArgumentParser, *, wait: bool = True, dry_run: bool = True, cause: bool = True
) -> None:
    """The flags of a change: plan it, make it conditional, say why, follow it."""
    if dry_run:
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="print the plan (field-level diff, action, the revision it was computed "
            "against) and change nothing",
        )
    sub.add_argument(
        "--expected-revision",
        type=_expected_revision,
        default=0,
        metavar="N",
        help="apply only if the service is still at revision N (a plan's); -1: must not "
        "exist yet. Otherwise ABORTED, REVISION_CONFLICT (exit 1), nothing changes",
    )
    if cause:
        sub.add_argument(
            "--change-cause",
            type=_change_cause,
            default="",
            metavar="TEXT",
            help="why (printable, at most 1024 characters): recorded with the revision, "
            "shown by 'rollout history'",
        )
    if wait:
        sub.add_argument(
            "--wait",
            action="store_true",
            help="follow the rollout to its end: exit 0 SUCCEEDED, 4 FAILED (reason printed)",
        )
        _wait_timeout(sub)


def _wait_timeout(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--wait-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="stop waiting after this long (exit 3; the rollout goes on); default: until "
        "the server ends it (the rollout's progress deadline bounds it)",
    )


def _format(text: str) -> Format:
    try:
        return Format(text)
    except ValueError:
        choices = ", ".join(f.value for f in Format if f is not Format.TABLE)
        raise argparse.ArgumentTypeError(f"expected one of {choices}") from None


def _add_global_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """The options every command takes, before or after the command name.

    Defaults are None here and resolved after parsing (flags, then environment,
    then context, then built-in defaults). On subcommands they are SUPPRESS so
    that an option given before the command is not reset by the subparser.
    """
    unset = argparse.SUPPRESS if on_subcommand else None
    group = parser.add_argument_group("connection and output")
    option = group.add_argument
    option(
        "--context",
        default=unset,
        metavar="NAME",
        help="use this context of the config file (env ALPHASWARM_CONTEXT)",
    )
    option(
        "--target",
        default=unset,
        help=f"server address host:port (env ALPHASWARM_TARGET; default {DEFAULT_TARGET})",
    )
    option(
        "--provider",
        default=unset,
        help="provider alias (env ALPHASWARM_PROVIDER; default: the server's default)",
    )
    option(
        "-n",
        "--namespace",
        default=unset,
        help="namespace (env ALPHASWARM_NAMESPACE; default 'default'; list, watch: every one)",
    )
    option(
        "--timeout",
        type=_positive_float,
        default=unset,
        help=f"deadline of each call in seconds (default {DEFAULT_TIMEOUT:g}; streams have none)",
    )
    option(
        "-o",
        "--output",
        type=_format,
        default=unset,
        metavar="FORMAT",
        help="json, yaml (proto3 JSON mapping, as grpcurl), wide (more columns), name",
    )
    option(
        "--json",
        action="store_const",
        const=Format.JSON,
        dest="output",
        default=unset,
        help="same as -o json",
    )
    option("--tls", action="store_true", default=unset, help="TLS with the system's roots")
    option("--ca-cert", default=unset, metavar="PEM", help="verify the server with this CA")
    option(
        "--client-cert",
        default=unset,
        metavar="PEM",
        help="client certificate for mutual TLS (with --client-key)",
    )
    option("--client-key", default=unset, metavar="PEM", help="client private key for mTLS")
    option(
        "--tls-server-name",
        default=unset,
        metavar="NAME",
        help="expect this name in the server certificate",
    )
    option(
        "--token",
        default=unset,
        help="bearer token (env ALPHASWARM_TOKEN; prefer a context's token_file/_command)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="alphaswarm",
        description="Drive an alphaswarm control plane: deployments on any provider.",
        epilog=(
            "Run 'alphaswarm COMMAND --help' for a command's options. Exit codes: 0 ok, "
            "1 call failed, 2 usage, 3 outcome unknown (check with status), 4 rollout "
            "FAILED (--wait, rollout status), 130 Ctrl-C."
        ),
    )
    parser.add_argument("--version", action="version", version=f"alphaswarm {version()}")
    _add_global_options(parser, on_subcommand=False)
    commands_ = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    services = completion.ServiceNames()

    def command(
        name: str,
        handler: Handler | None,
        help_text: str,
        parent: Any = commands_,
        *,
        mutating: bool = False,
        aliases: Sequence[str] = (),
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, aliases=list(aliases)
        )
        _add_global_options(sub, on_subcommand=True)
        sub.set_defaults(handler=handler, mutating=mutating)
        return sub

    def service(
        sub: argparse.ArgumentParser, *, many: bool = False, optional: bool = False
    ) -> None:
        if many:
            arg = sub.add_argument("service_ids", nargs="+", metavar="SERVICE")
        elif optional:
            arg = sub.add_argument("service_id", nargs="?", metavar="SERVICE")
        else:
            arg = sub.add_argument("service_id", metavar="SERVICE")
        arg.completer = services  # type: ignore[attr-defined]

    command("providers", commands.cmd_providers, "list the server's providers")
    command("health", commands.cmd_health, "probe a provider's credentials and connectivity")

    start = command(
        "start",
        commands.cmd_start,
        "start or update a deployment (flags, a spec file, or both; flags win)",
        mutating=True,
    )
    start.add_argument(
        "service_id", nargs="?", metavar="SERVICE", help="service name (or service_id in the file)"
    ).completer = services  # type: ignore[attr-defined]
    start.add_argument(
        "-f", "--file", metavar="SPEC", help="YAML/JSON DeploymentSpec ('-' for stdin)"
    )
    _spec_flags(start)
    _change_flags(start)
    start.epilog = "The command to run follows '--': alphaswarm start web -- sleep 300"

    scale = command("scale", commands.cmd_scale, "set a deployment's replica count", mutating=True)
    service(scale)
    scale.add_argument("replicas", type=int)
    _change_flags(scale, wait=False, cause=False)

    status = command(
        "status",
        commands.cmd_status,
        "show a deployment: what runs (image or command, env, ports, resources) and replicas",
        aliases=["describe"],
    )
    service(status)

    listing = command("list", commands.cmd_list, "list deployments (all pages unless asked)")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    listing.add_argument("--page-size", type=_positive_int, help="fetch one page of this size")
    listing.add_argument("--page-token", help="fetch the page after this token")

    stop = command(
        "stop", commands.cmd_stop, "stop every replica (the definition stays)", mutating=True
    )
    service(stop, many=True)
    _change_flags(stop, wait=False, dry_run=False, cause=False)

    delete = command(
        "delete",
        commands.cmd_delete,
        "remove deployments and everything the backend holds for them",
        mutating=True,
    )
    service(delete, many=True)
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask (needed off a TTY)")
    delete.add_argument(
        "--allow-missing", action="store_true", help="a service that does not exist is no error"
    )
    _change_flags(delete, wait=False, dry_run=False, cause=False)

    _set_command(command, service)

    _config_commands(commands_, command, service)
    _rollout_commands(commands_, command, service)
    _stream_commands(command, service)
    _context_commands(commands_, command)

    _completion_command(command)
    return parser


def _completion_command(command: Any) -> None:
    shell = command(
        "completion",
        completion.cmd_completion,
        'print the shell completion script: eval "$(alphaswarm completion bash)"',
    )
    shell.add_argument("shell", choices=completion.SHELLS)
    shell.set_defaults(offline=True)


def _config_commands(commands_: Any, command: Any, service: Any) -> None:
    config = commands_.add_parser("config", help="read or change a deployment's config")
    _add_global_options(config, on_subcommand=True)
    config_commands = config.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, parser_class=Parser
    )
    get = command(
        "get", commands.cmd_config_get, "show config keys and version", parent=config_commands
    )
    service(get)
    set_ = command(
        "set",
        commands.cmd_config_set,
        "set and remove keys (replicas roll onto them)",
        parent=config_commands,
        mutating=True,
    )
    service(set_)
    set_.add_argument("pairs", nargs="*", type=_key_value, metavar="K=V")
    set_.add_argument(
        "--remove", action="append", default=[], metavar="KEY", help="key to remove (repeat)"
    )
    set_.add_argument(
        "--expected-version",
        default="",
        metavar="V",
        help="apply only if the config is still at this version",
    )
    _change_flags(set_)


def _rollout_commands(commands_: Any, command: Any, service: Any) -> None:
    rollout = commands_.add_parser("rollout", help="follow, list and undo a deployment's revisions")
    _add_global_options(rollout, on_subcommand=True)
    actions = rollout.add_subparsers(
        dest="rollout_command", metavar="ACTION", required=True, parser_class=Parser
    )
    status = command(
        "status",
        rollouts.cmd_rollout_status,
        "follow the current rollout to its end: exit 0 SUCCEEDED, 4 FAILED",
        actions,
    )
    service(status)
    _wait_timeout(status)
    history = command(
        "history",
        rollouts.cmd_rollout_history,
        "list the revisions, newest first: when, why, rollbacks",
        actions,
    )
    service(history)
    undo = command(
        "undo",
        rollouts.cmd_rollout_undo,
        "go back to the previous revision (or --to-revision N), as a new revision",
        actions,
        mutating=True,
    )
    service(undo)
    undo.add_argument(
        "--to-revision",
        type=_positive_int,
        default=0,
        metavar="N",
        help="the revision to restore (default: the one before the current)",
    ).completer = completion.RevisionNumbers()
    _change_flags(undo)


def _stream_commands(command: Any, service: Any) -> None:
    metrics = command(
        "metrics",
        streaming.cmd_metrics,
        "one metrics sample, or a live summary with --follow (-o wide: per replica)",
    )
    service(metrics)
    metrics.add_argument("--follow", "-F", action="store_true", help="keep streaming")
    metrics.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between samples (default 2)",
    )
    metrics.add_argument(
        "--count", type=_positive_int, metavar="N", help="with --follow: stop after N samples"
    )

    watch = command(
        "watch",
        streaming.cmd_watch,
        "a service's status and each change; without SERVICE, the namespace as a live table",
    )
    service(watch, optional=True)
    watch.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N messages")

    logs = command(
        "logs",
        streaming.cmd_logs,
        "print what a service's replicas wrote ('instance | line'; stderr: 'instance ! line')",
    )
    service(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "--tail",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="the last N lines of each replica (default: all the server keeps)",
    )
    logs.add_argument(
        "--since", metavar="WHEN", help="only lines since 10m / 2h / 30s ago, or an RFC 3339 time"
    )
    logs.add_argument("--instance", default="", metavar="ID", help="only this replica's lines")
    logs.add_argument(
        "-t", "--timestamps", action="store_true", help="prefix each line with its time"
    )
    logs.add_argument("--count", type=_positive_int, metavar="N", help="stop after N lines")


def _spec_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--image", help="container image (container providers)")
    sub.add_argument("--replicas", type=int, help=f"replicas (default {DEFAULT_REPLICAS})")
    for flag, help_text in (
        ("--env", "environment variable (repeat)"),
        ("--label", "label (repeat)"),
        ("--option", "provider-specific option (repeat)"),
    ):
        sub.add_argument(
            flag, type=_key_value, action="append", default=[], metavar="K=V", help=help_text
        )
    sub.add_argument(
        "--port",
        type=_port,
        action="append",
        default=[],
        metavar="[HOST:]PORT[/udp]",
        help="port, Docker's order (repeat)",
    )
    sub.add_argument("--cpu", help="CPU limit per replica, e.g. 500m")
    sub.add_argument("--memory", help="memory limit per replica, e.g. 256Mi")
    sub.add_argument(
        "--progress-deadline",
        type=_positive_float,
        metavar="SECONDS",
        help="a rollout without progress for this long FAILS (1 to 3600; default 600)",
    )
    sub.add_argument(
        "--auto-rollback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="roll back to the last good revision when a rollout fails",
    )


def _set_command(command: Any, service: Any) -> None:
    """``alphaswarm set WHAT SERVICE ...``: change one part of a spec, keep the rest."""
    parser = command(
        "set",
        None,
        "change one part of a deployment's spec and keep the rest (read-modify-write)",
        mutating=True,
    )
    parser.epilog = commands.SET_MERGE_RULE
    parts = parser.add_subparsers(dest="part", metavar="PART", required=True, parser_class=Parser)

    def part(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = command(
            name, commands.cmd_set, help_text, parent=parts, mutating=True
        )
        service(sub)
        # A scale makes no revision: nothing to wait for, no cause to record.
        rolls = name != "replicas"
        _change_flags(sub, wait=rolls, cause=rolls)
        return sub

    part("image", "replace the image").add_argument("image")
    part("replicas", "set the replica count").add_argument("replicas", type=int)
    for name, what in (
        ("env", "environment variables"),
        ("label", "labels"),
        ("option", "options"),
    ):
        sub = part(name, f"set (K=V) and remove (--remove K) {what}")
        sub.add_argument("pairs", nargs="*", type=_key_value, metavar="K=V")
        sub.add_argument("--remove", action="append", default=[], metavar="KEY")
    resources = part("resources", "set --cpu and/or --memory limits ('' removes one)")
    resources.add_argument("--cpu")
    resources.add_argument("--memory")
    ports = part("ports", "replace the ports (none given: no ports)")
    ports.add_argument("ports", nargs="*", type=_port, metavar="[HOST:]PORT[/udp]")
    part("command", "replace the command: alphaswarm set command web -- sleep 600")


def _context_commands(commands_: Any, command: Any) -> None:
    context = commands_.add_parser(
        "context", help="named connection settings in " + str(config_path())
    )
    _add_global_options(context, on_subcommand=True)
    actions = context.add_subparsers(
        dest="context_command", metavar="ACTION", required=True, parser_class=Parser
    )
    listing = command("list", commands.cmd_context_list, "list contexts (* = current)", actions)
    listing.set_defaults(offline=True)
    use = command("use", commands.cmd_context_use, "make a context the current one", actions)
    use.add_argument("name")
    use.set_defaults(offline=True)
    current = command("current", commands.cmd_context_current, "print the current one", actions)
    current.set_defaults(offline=True)
    delete = command("delete", commands.cmd_context_delete, "remove a context", actions)
    delete.add_argument("name")
    delete.set_defaults(offline=True)
    set_ = command(
        "set",
        commands.cmd_context_set,
        "create or update a context from the connection flags given "
        "(--target, --ca-cert, -n, --provider, ...)",
        actions,
    )
    set_.add_argument("name")
    set_.add_argument("--token-file", metavar="PATH", help="read the token from this file")
    set_.add_argument(
        "--token-command",
        metavar="ARGV",
        help="run this (split on spaces, no shell) and use its output as the token",
    )
    set_.add_argument(
        "--store-token",
        action="store_true",
        help="store --token in the file itself (mode 0600); otherwise it is refused",
    )
    set_.add_argument("--use", action="store_true", help="also make it the current context")
    set_.set_defaults(offline=True)


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``: what follows is the replicas' argv, never parsed as flags."""
    args = list(argv)
    if "--" in args:
        index = args.index("--")
        return args[:index], args[index + 1 :]
    return args, []


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the whole command line (argparse exits with 2 on a usage error)."""
    parser = build_parser()
    options, command = split_command(argv)
    args = parser.parse_args(options)
    args.argv = command
    takes_command = args.command == "start" or getattr(args, "part", "") == "command"
    if command and not takes_command:
        parser.error(f"only 'start' takes a command after '--' (got: {' '.join(command)})")
    if getattr(args, "part", "") == "command" and not command:
        parser.error("set command: give the new command after '--'")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")
    return args


# -- connection settings ---------------------------------------------------------------------


def resolve(args: argparse.Namespace, env: Any = None) -> None:
    """Fill every connection setting: flag, else environment, else context, else default."""
    env = os.environ if env is None else env
    path = config_path(env)
    name = args.context or env.get("ALPHASWARM_CONTEXT", "")
    context = Context()
    args.context_file = path
    if name or (not getattr(args, "offline", False) and path.exists()):
        config = ConfigFile.load(path)
        name = name or config.current
        if name:
            context = config.get(name)
    args.context_name = name

    def pick(flag: Any, var: str, from_context: Any, default: Any) -> Any:
        if flag is not None:
            return flag
        if var and env.get(var):
            return env[var]
        return from_context or default

    args.explicit = {
        key: getattr(args, key)
        for key in (
            "target",
            "provider",
            "namespace",
            "tls",
            "ca_cert",
            "client_cert",
            "client_key",
            "tls_server_name",
            "token",
        )
        if getattr(args, key) is not None
    }
    args.target = pick(args.target, "ALPHASWARM_TARGET", context.target, DEFAULT_TARGET)
    args.provider = pick(args.provider, "ALPHASWARM_PROVIDER", context.provider, "")
    args.namespace = pick(args.namespace, "ALPHASWARM_NAMESPACE", context.namespace, "")
    args.timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    args.output = args.output or Format.TABLE
    args.tls = bool(args.tls if args.tls is not None else context.tls)
    tls_flags = any(args.explicit.get(k) for k in ("tls", "ca_cert", "client_cert", "client_key"))
    # The context's TLS files go together: flags that set any of them replace them all.
    for key in ("ca_cert", "client_cert", "client_key", "tls_server_name"):
        if getattr(args, key) is None and not tls_flags:
            setattr(args, key, getattr(context, key) or None)
    token = pick(args.token, "ALPHASWARM_TOKEN", None, None)
    if token is None and not getattr(args, "offline", False):
        token = context.read_token()
    args.token = token


def _read(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials when any TLS option is given; None means plaintext."""
    if not (args.tls or args.ca_cert or args.client_cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca_cert) if args.ca_cert else None,
        private_key=_read(args.client_key) if args.client_key else None,
        certificate_chain=_read(args.client_cert) if args.client_cert else None,
    )


def make_client(args: argparse.Namespace) -> AlphaswarmClient:
    if not hasattr(args, "explicit"):
        resolve(args)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    options = (
        [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    )
    return AlphaswarmClient(
        args.target,
        credentials=channel_credentials(args),
        metadata=metadata,
        timeout=args.timeout,
        provider=args.provider,
        options=options,
    )


# -- entry point ----------------------------------------------------------------------------


def _error(text: str) -> None:
    sys.stderr.write("error: " + " ".join(text.split()) + "\n")
    sys.stderr.flush()


async def run(args: argparse.Namespace, out: Output | None = None) -> int:
    """Run one parsed command; errors are printed, and their exit code returned."""
    try:
        if not hasattr(args, "explicit"):
            resolve(args)
        out = out or Output(args.output)
        handler: Handler = args.handler
        async with make_client(args) as client:
            return await handler(client, args, out)
    except AlphaswarmError as error:
        changing = args.mutating and not getattr(args, "dry_run", False)
        if changing and error.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            _error(commands.outcome_unknown(args, error))
            return EXIT_OUTCOME_UNKNOWN
        _error(error.one_line())
        return EXIT_RPC_ERROR
    except (UsageError, SpecError, ContextError) as error:
        _error(str(error))
        return EXIT_USAGE


async def run_until_signal(args: argparse.Namespace) -> int:
    """``run(args)``, cancelled by SIGINT or SIGTERM, whatever the inherited disposition."""
    loop = asyncio.get_running_loop()
    command = asyncio.ensure_future(run(args))
    received: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        received.append(signum)
        command.cancel()

    previous = {signum: signal.getsignal(signum) for signum in EXIT_ON_SIGNAL}
    for signum in EXIT_ON_SIGNAL:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await command
    except asyncio.CancelledError:
        if received:
            return EXIT_ON_SIGNAL[received[0]]
        raise
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            if handler is not None:  # as found: main() may run inside a host program
                signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and completion.requested():
        Parser.intermixed = False
        completion.autocomplete(build_parser)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        resolve(args)
        if args.command == "delete":
            commands.confirm_delete(args)  # before the event loop: a plain blocking prompt
    except (UsageError, ContextError) as error:
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except EOFError:
        return EXIT_USAGE
    try:
        return asyncio.run(run_until_signal(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`); point stdout at /dev/null so the interpreter's
        # final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
