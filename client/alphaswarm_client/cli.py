"""``alphaswarm``: the command-line client of ProviderService.

Exit codes: 0 success, 1 the server (or the network) refused the call, 2 a
usage error (bad flags, unreadable spec file), 130 interrupted (Ctrl-C, SIGINT),
143 terminated (SIGTERM), 141 stdout closed early (``| head``). Errors are one
line on stderr: ``error: CODE: message (reason=...; field: why)``.

SIGINT and SIGTERM end any command, streams included, cleanly (the call is
cancelled, nothing is printed) even when the parent started the CLI with them
ignored (``cmd &`` in a script, some CI runners): Python would then install no
handler of its own, so the CLI installs both itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import render
from alphaswarm_client.client import AlphaswarmClient
from alphaswarm_client.errors import AlphaswarmError
from alphaswarm_client.specfile import (
    DEFAULT_REPLICAS,
    SpecError,
    load_spec_file,
    parse_key_value,
    parse_port,
)

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141
#: The signals that end a command, and its exit code for each (128 + the signal number).
EXIT_ON_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}

Handler = Callable[[AlphaswarmClient, argparse.Namespace, "Output"], Awaitable[int]]


class UsageError(Exception):
    """Arguments that parse but do not make sense together; exit code 2."""


# -- argument parsing ----------------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    try:
        return parse_key_value(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _port(text: str) -> types_pb2.PortSpec:
    try:
        return parse_port(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
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


def _add_global_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """The options every command takes, before or after the command name.

    On subcommands the defaults are SUPPRESS so that an option given before
    the command is not reset by the subparser's default.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if on_subcommand else value

    env = os.environ
    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--target",
        default=default(env.get("ALPHASWARM_TARGET", DEFAULT_TARGET)),
        help=f"server address host:port (env ALPHASWARM_TARGET; default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--provider",
        default=default(env.get("ALPHASWARM_PROVIDER", "")),
        help="provider alias (env ALPHASWARM_PROVIDER; default: the server's default)",
    )
    group.add_argument(
        "-n",
        "--namespace",
        default=default(""),
        help="namespace (default: 'default'; for list: every namespace)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=default(30.0),
        help="deadline of each call in seconds (default 30; streams have none)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON (one object per line on streams)",
    )
    group.add_argument(
        "--tls",
        action="store_true",
        default=default(False),
        help="use TLS with the system's root certificates",
    )
    group.add_argument(
        "--ca-cert",
        default=default(None),
        metavar="PEM",
        help="verify the server with this CA bundle (implies --tls)",
    )
    group.add_argument(
        "--client-cert",
        default=default(None),
        metavar="PEM",
        help="client certificate for mutual TLS (with --client-key)",
    )
    group.add_argument(
        "--client-key",
        default=default(None),
        metavar="PEM",
        help="client private key for mutual TLS",
    )
    group.add_argument(
        "--tls-server-name",
        default=default(None),
        metavar="NAME",
        help="expect this name in the server certificate",
    )
    group.add_argument(
        "--token",
        default=default(env.get("ALPHASWARM_TOKEN")),
        help="bearer token sent as 'authorization: Bearer ...' (env ALPHASWARM_TOKEN)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alphaswarm",
        description="Drive an alphaswarm control plane: deployments on any provider.",
        epilog="Run 'alphaswarm COMMAND --help' for a command's options.",
    )
    _add_global_options(parser, on_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Handler, help_text: str, parent: Any = commands
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text
        )
        _add_global_options(sub, on_subcommand=True)
        sub.set_defaults(handler=handler)
        return sub

    command("providers", cmd_providers, "list the server's providers")
    command("health", cmd_health, "probe a provider's credentials and connectivity")

    start = command(
        "start",
        cmd_start,
        "start or update a deployment (flags, a spec file, or both; flags win)",
    )
    start.add_argument("service_id", nargs="?", help="service name (or service_id in the file)")
    start.add_argument(
        "-f",
        "--file",
        metavar="SPEC",
        help="YAML/JSON DeploymentSpec ('-' for stdin); proto field names",
    )
    start.add_argument("--image", help="container image (container providers)")
    start.add_argument("--replicas", type=int, help=f"replicas (default {DEFAULT_REPLICAS})")
    start.add_argument(
        "--env",
        type=_key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="environment variable (repeat)",
    )
    start.add_argument(
        "--label",
        type=_key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="label (repeat)",
    )
    start.add_argument(
        "--port",
        type=_port,
        action="append",
        default=[],
        metavar="[HOST:]PORT[/udp]",
        help="port, Docker's order (repeat)",
    )
    start.add_argument("--cpu", help="CPU limit per replica, e.g. 500m")
    start.add_argument("--memory", help="memory limit per replica, e.g. 256Mi")
    start.add_argument(
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="K=V",
        help="provider-specific option (repeat)",
    )
    start.epilog = "The command to run follows '--': alphaswarm start web -- sleep 300"

    scale = command("scale", cmd_scale, "set a deployment's replica count")
    scale.add_argument("service_id")
    scale.add_argument("replicas", type=int)

    status = command("status", cmd_status, "show a deployment and its replicas")
    status.add_argument("service_id")

    listing = command("list", cmd_list, "list deployments (all pages unless paging is asked)")
    listing.add_argument("--page-size", type=_positive_int, help="fetch one page of this size")
    listing.add_argument("--page-token", help="fetch the page after this token")

    stop = command("stop", cmd_stop, "stop every replica (the definition stays)")
    stop.add_argument("service_id")

    config = commands.add_parser("config", help="read or change a deployment's config")
    _add_global_options(config, on_subcommand=True)
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    get = command("get", cmd_config_get, "show config keys and version", parent=config_commands)
    get.add_argument("service_id")
    set_ = command(
        "set",
        cmd_config_set,
        "set and remove keys (replicas roll onto them)",
        parent=config_commands,
    )
    set_.add_argument("service_id")
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

    metrics = command(
        "metrics", cmd_metrics, "print one metrics sample, or a live table with --follow"
    )
    metrics.add_argument("service_id")
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

    watch = command("watch", cmd_watch, "print the status, then every change, until Ctrl-C")
    watch.add_argument("service_id")
    watch.add_argument(
        "--count", type=_positive_int, metavar="N", help="stop after N status messages"
    )
    return parser


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
    if command and args.command != "start":
        parser.error(f"only 'start' takes a command after '--' (got: {' '.join(command)})")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")
    return args


# -- building requests ----------------------------------------------------------------------


def build_spec(args: argparse.Namespace) -> types_pb2.DeploymentSpec:
    """The DeploymentSpec of ``start``: the file (if any), then each flag over it."""
    if args.file:
        spec = load_spec_file(args.file)
    else:
        spec = types_pb2.DeploymentSpec(replicas=DEFAULT_REPLICAS)
    if args.service_id:
        spec.service_id = args.service_id
    if args.namespace:
        spec.namespace = args.namespace
    if args.image is not None:
        spec.image = args.image
    if args.replicas is not None:
        spec.replicas = args.replicas
    spec.env.update(dict(args.env))
    spec.labels.update(dict(args.label))
    spec.provider_options.update(dict(args.option))
    if args.port:
        del spec.ports[:]
        spec.ports.extend(args.port)
    if args.cpu is not None:
        spec.resources.cpu = args.cpu
    if args.memory is not None:
        spec.resources.memory = args.memory
    if args.argv:
        del spec.command[:]
        spec.command.extend(args.argv)
    if not spec.service_id:
        raise UsageError("start needs a service id (argument or service_id in the spec file)")
    return spec


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
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


# -- output ---------------------------------------------------------------------------------


class Output:
    """Where results go: JSON or human text on stdout, flushed so pipes see each line."""

    def __init__(self, *, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout

    @property
    def is_tty(self) -> bool:
        return self.stream.isatty()

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def result(self, message: Any, human: Callable[[Any], str]) -> None:
        self.line(render.to_json(message) if self.as_json else human(message))


# -- commands -------------------------------------------------------------------------------


async def cmd_providers(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    out.result(await client.list_providers(), render.providers)
    return 0


async def cmd_health(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    health = await client.check_health()
    out.result(health, render.health)
    # A probe that ran but found the provider unusable is still a failure for scripts.
    return 0 if health.healthy else EXIT_RPC_ERROR


async def cmd_start(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    status = await client.start_deployment(build_spec(args))
    out.result(status, lambda s: render.deployments([s]))
    return 0


async def cmd_scale(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    status = await client.scale_deployment(args.service_id, args.replicas, namespace=args.namespace)
    out.result(status, lambda s: render.deployments([s]))
    return 0


async def cmd_stop(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    status = await client.stop_deployment(args.service_id, namespace=args.namespace)
    out.result(status, lambda s: render.deployments([s]))
    return 0


async def cmd_status(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    out.result(await client.get_status(args.service_id, namespace=args.namespace), render.status)
    return 0


async def cmd_list(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    if args.page_size is not None or args.page_token is not None:
        page = await client.list_deployments(
            namespace=args.namespace,
            page_size=args.page_size or 0,
            page_token=args.page_token or "",
        )
        if out.as_json:
            out.line(render.to_json(page))
        else:
            out.line(render.deployments(page.deployments))
            if page.next_page_token:
                out.line(f"next page: --page-token {page.next_page_token}")
        return 0
    items = [d async for d in client.iter_deployments(namespace=args.namespace)]
    if out.as_json:
        out.line(
            render.to_json(
                {"deployments": [render.to_dict(d) for d in items], "next_page_token": ""}
            )
        )
    else:
        out.line(render.deployments(items))
    return 0


async def cmd_config_get(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    out.result(await client.get_config(args.service_id, namespace=args.namespace), render.config)
    return 0


async def cmd_config_set(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    if not args.pairs and not args.remove:
        raise UsageError("config set needs at least one K=V or --remove KEY")
    config = await client.apply_config(
        args.service_id,
        namespace=args.namespace,
        set=dict(args.pairs),
        remove=args.remove,
        expected_version=args.expected_version,
    )
    out.result(config, render.config)
    return 0


async def cmd_metrics(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    # One-shot: the deadline covers the wait for the first sample, which may take an interval.
    timeout = None if args.follow else args.timeout + args.interval
    limit = args.count if args.follow else 1
    live = args.follow and out.is_tty and not out.as_json
    history: deque[types_pb2.MetricSample] = deque(
        maxlen=max(1, shutil.get_terminal_size().lines - 4)
    )
    title = f"metrics of {args.namespace or 'default'}/{args.service_id} every {args.interval:g}s"
    seen = 0
    stream = client.stream_metrics(
        args.service_id, namespace=args.namespace, interval=args.interval, timeout=timeout
    )
    async with contextlib.aclosing(stream):
        async for sample in stream:
            seen += 1
            if out.as_json:
                out.line(render.to_json(sample, compact=args.follow))
            elif live:
                history.append(sample)
                # Redraw in place: home the cursor and clear the screen, then the table.
                out.stream.write("\x1b[H\x1b[2J")
                out.line(f"{title} (Ctrl-C to stop)\n\n{render.metrics_table(history)}")
            elif not args.follow:
                out.line(render.metrics_table([sample]))
            else:
                if seen == 1:
                    out.line(render.metrics_header_line())
                out.line(render.metrics_line(sample))
            if limit is not None and seen >= limit:
                break
    return 0


async def cmd_watch(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    seen = 0
    stream = client.watch(args.service_id, namespace=args.namespace)
    async with contextlib.aclosing(stream):
        async for status in stream:
            seen += 1
            if out.as_json:
                out.line(render.to_json(status, compact=True))
            else:
                if seen == 1:
                    out.line(render.watch_header_line())
                out.line(render.watch_line(status))
            if args.count is not None and seen >= args.count:
                break
    return 0


# -- entry point ----------------------------------------------------------------------------


def _error(text: str) -> None:
    sys.stderr.write("error: " + " ".join(text.split()) + "\n")
    sys.stderr.flush()


async def run(args: argparse.Namespace, out: Output | None = None) -> int:
    """Run one parsed command; errors are printed, and their exit code returned."""
    out = out or Output(as_json=args.json)
    handler: Handler = args.handler
    try:
        async with make_client(args) as client:
            return await handler(client, args, out)
    except AlphaswarmError as error:
        _error(error.one_line())
        return EXIT_RPC_ERROR
    except (UsageError, SpecError) as error:
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
    args = parse_args(sys.argv[1:] if argv is None else argv)
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
