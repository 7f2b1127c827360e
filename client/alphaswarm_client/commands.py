"""The CLI's commands that make one call per service (and the context commands).

Every handler takes the client, the parsed arguments and the Output, and
returns the exit code; failed calls raise and cli.run turns them into one line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Awaitable, Callable

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import render, rollouts
from alphaswarm_client.client import AlphaswarmClient
from alphaswarm_client.contexts import ConfigFile, Context, ContextError, check_name
from alphaswarm_client.errors import AlphaswarmError
from alphaswarm_client.exits import (
    EXIT_RPC_ERROR,
    UsageError,
)
from alphaswarm_client.output import Format, Output
from alphaswarm_client.specfile import DEFAULT_REPLICAS, load_spec_file

SECRET_MASK = "<secret>"

Handler = Callable[[AlphaswarmClient, argparse.Namespace, Output], Awaitable[int]]


def outcome_unknown(args: argparse.Namespace, error: AlphaswarmError) -> str:
    names = getattr(args, "service_ids", None) or [getattr(args, "service_id", None) or ""]
    where = " ".join(n for n in names if n) or "SERVICE"
    return (
        f"DEADLINE_EXCEEDED: outcome unknown: the server may have applied the change "
        f"(it finishes what it accepted); check with 'alphaswarm status {where}'"
        + (f" (request_id={error.request_id})" if error.request_id else "")
    )


def _error_line(text: str) -> None:
    sys.stderr.write("error: " + " ".join(text.split()) + "\n")
    sys.stderr.flush()


# -- spec building ---------------------------------------------------------------------------


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
    if args.progress_deadline is not None:
        spec.progress_deadline.FromNanoseconds(round(args.progress_deadline * 1e9))
    if args.auto_rollback is not None:
        spec.auto_rollback = args.auto_rollback
    if args.argv:
        del spec.command[:]
        spec.command.extend(args.argv)
    if not spec.service_id:
        raise UsageError("start needs a service id (argument or service_id in the spec file)")
    return spec


# -- one call ---------------------------------------------------------------------------------


async def cmd_providers(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    response = await client.list_providers()
    out.result(
        response,
        lambda: render.providers(response, wide=out.wide, width=out.width),
        lambda: [p.alias for p in response.providers],
    )
    return 0


async def cmd_health(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    health = await client.check_health()
    out.result(pb.CheckHealthResponse(health=health), lambda: render.health(health))
    # A probe that ran but found the provider unusable is still a failure for scripts.
    return 0 if health.healthy else EXIT_RPC_ERROR


def _statuses(out: Output, response: object, status: types_pb2.DeploymentStatus) -> None:
    out.result(
        response,  # type: ignore[arg-type]
        lambda: render.deployments([status], wide=out.wide, width=out.width),
        lambda: render.names([status]),
    )


async def cmd_start(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    rollouts.check_change_flags(args)
    spec = build_spec(args)
    if args.dry_run:
        planned = await client.plan_start(spec, expected_revision=args.expected_revision)
        service = f"{spec.namespace or 'default'}/{spec.service_id}"
        return rollouts.show_plan(out, planned, planned.plan, service)
    status = await client.start_deployment(
        spec, expected_revision=args.expected_revision, change_cause=args.change_cause
    )
    return await _changed(client, args, out, pb.StartDeploymentResponse(status=status), status)


async def _changed(
    client: AlphaswarmClient,
    args: argparse.Namespace,
    out: Output,
    response: object,
    status: types_pb2.DeploymentStatus,
) -> int:
    """The answer of a change of the spec: shown, or (``--wait``) followed to its end."""
    if getattr(args, "wait", False):
        rollouts.announce(
            out,
            response,  # type: ignore[arg-type]
            rollouts.ref(status),
            f"revision {status.revision}",
        )
        return await rollouts.follow(
            client, args, out, status.service_id, status.namespace, revision=status.revision
        )
    _statuses(out, response, status)
    return 0


async def cmd_scale(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    if args.dry_run:
        planned = await client.plan_scale(
            args.service_id,
            args.replicas,
            namespace=args.namespace,
            expected_revision=args.expected_revision,
        )
        service = f"{args.namespace or 'default'}/{args.service_id}"
        return rollouts.show_plan(out, planned, planned.plan, service)
    status = await client.scale_deployment(
        args.service_id,
        args.replicas,
        namespace=args.namespace,
        expected_revision=args.expected_revision,
    )
    _statuses(out, pb.ScaleDeploymentResponse(status=status), status)
    return 0


async def cmd_status(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    status = await client.get_status(args.service_id, namespace=args.namespace)
    out.result(
        pb.GetDeploymentStatusResponse(status=status),
        lambda: render.status(status, wide=out.wide, width=out.width),
        lambda: render.names([status]),
    )
    return 0


async def cmd_list(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    namespace = "" if args.all_namespaces else args.namespace
    if args.page_size is not None or args.page_token is not None:
        page = await client.list_deployments(
            namespace=namespace,
            page_size=args.page_size or 0,
            page_token=args.page_token or "",
        )
        items = list(page.deployments)
        token = page.next_page_token
    else:
        items = [d async for d in client.iter_deployments(namespace=namespace)]
        page = pb.ListDeploymentsResponse(deployments=items)
        token = ""

    def human() -> str:
        text = render.deployments(items, wide=out.wide, width=out.width)
        return text + (f"\nnext page: --page-token {token}" if token else "")

    out.result(page, human, lambda: render.names(items))
    return 0


async def _each(args: argparse.Namespace, call: Callable[[str], Awaitable[None]]) -> int:
    """``call`` for every named service, in order; a failure is reported and the rest go on."""
    code = 0
    for name in args.service_ids:
        try:
            await call(name)
        except AlphaswarmError as error:
            if len(args.service_ids) == 1:
                raise
            _error_line(f"{name}: {error.one_line()}")
            code = EXIT_RPC_ERROR
    return code


def _one_service_for_revision(args: argparse.Namespace) -> None:
    if args.expected_revision and len(args.service_ids) > 1:
        raise UsageError("--expected-revision is one service's revision: name one service")


async def cmd_stop(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    _one_service_for_revision(args)
    stopped: list[types_pb2.DeploymentStatus] = []
    several = len(args.service_ids) > 1

    async def stop(name: str) -> None:
        status = await client.stop_deployment(
            name, namespace=args.namespace, expected_revision=args.expected_revision
        )
        if several and out.structured:
            out.stream_message(pb.StopDeploymentResponse(status=status))
        stopped.append(status)

    code = await _each(args, stop)
    if stopped and not (several and out.structured):
        if several:
            out.result(
                pb.ListDeploymentsResponse(deployments=stopped),
                lambda: render.deployments(stopped, wide=out.wide, width=out.width),
                lambda: render.names(stopped),
            )
        else:
            _statuses(out, pb.StopDeploymentResponse(status=stopped[0]), stopped[0])
    return code


def confirm_delete(args: argparse.Namespace) -> None:
    """Ask on a terminal; refuse off one without --yes (a script must say it means it)."""
    if args.yes:
        return
    namespace = args.namespace or "default"
    names = ", ".join(f"{namespace}/{name}" for name in args.service_ids)
    if not sys.stdin.isatty():
        raise UsageError(f"delete {names}: not a terminal, so nothing can be confirmed; add --yes")
    them = "them" if len(args.service_ids) > 1 else "it"
    sys.stderr.write(f"Delete {names} and everything the backend holds for {them}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("nothing deleted")


async def cmd_delete(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    _one_service_for_revision(args)
    namespace = args.namespace or "default"

    async def delete(name: str) -> None:
        deleted = await client.delete_deployment(
            name,
            namespace=args.namespace,
            allow_missing=args.allow_missing,
            expected_revision=args.expected_revision,
        )
        response = pb.DeleteDeploymentResponse(deleted=deleted)
        if out.stream_message(response):
            return
        if out.format is Format.NAME:
            if deleted:
                out.line(f"{namespace}/{name}")
        else:
            out.line(f"{namespace}/{name} {'deleted' if deleted else 'not found (allowed)'}")

    return await _each(args, delete)


async def cmd_config_get(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    config = await client.get_config(args.service_id, namespace=args.namespace)
    out.result(
        pb.GetServiceConfigResponse(config=config),
        lambda: render.config(config, width=out.width),
        lambda: [f"{config.namespace}/{config.service_id}"],
    )
    return 0


async def cmd_config_set(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    if not args.pairs and not args.remove:
        raise UsageError("config set needs at least one K=V or --remove KEY")
    rollouts.check_change_flags(args)
    if args.dry_run:
        planned = await client.plan_config(
            args.service_id,
            namespace=args.namespace,
            set=dict(args.pairs),
            remove=args.remove,
            expected_version=args.expected_version,
            expected_revision=args.expected_revision,
        )
        service = f"{args.namespace or 'default'}/{args.service_id}"
        return rollouts.show_plan(out, planned, planned.plan, service)
    config = await client.apply_config(
        args.service_id,
        namespace=args.namespace,
        set=dict(args.pairs),
        remove=args.remove,
        expected_version=args.expected_version,
        expected_revision=args.expected_revision,
        change_cause=args.change_cause,
    )
    response = pb.ApplyConfigResponse(config=config)
    if args.wait:
        service = f"{config.namespace}/{config.service_id}"
        rollouts.announce(out, response, service, f"config version {config.version}")
        return await rollouts.follow(client, args, out, config.service_id, config.namespace)
    out.result(
        response,
        lambda: render.config(config, width=out.width),
        lambda: [f"{config.namespace}/{config.service_id}"],
    )
    return 0


# -- set: read, modify one part, write -----------------------------------------------------

SET_MERGE_RULE = (
    "Merge rule: the spec is read back from the server (status), one part is changed and "
    "the whole spec is applied (StartDeployment). Scalars (image, replicas, cpu, memory) are "
    "replaced; maps (env, label, option) are merged key by key (K=V sets, --remove K "
    "deletes, other keys stay); lists (command, ports) are replaced whole. Where the "
    "provider keeps revisions the write is conditional on the revision read: a change made "
    "by someone else in between is refused (REVISION_CONFLICT) rather than overwritten; "
    "elsewhere it is overwritten."
)


def _apply_part(spec: types_pb2.DeploymentSpec, args: argparse.Namespace) -> None:
    part = args.part
    if part == "image":
        spec.image = args.image
    elif part == "replicas":
        spec.replicas = args.replicas
    elif part in ("env", "label", "option"):
        if not args.pairs and not args.remove:
            raise UsageError(f"set {part} needs at least one K=V or --remove KEY")
        target = {"env": spec.env, "label": spec.labels, "option": spec.provider_options}[part]
        for key in args.remove:
            target.pop(key, None)
        target.update(dict(args.pairs))
    elif part == "resources":
        if args.cpu is None and args.memory is None:
            raise UsageError("set resources needs --cpu and/or --memory")
        if args.cpu is not None:
            spec.resources.cpu = args.cpu
        if args.memory is not None:
            spec.resources.memory = args.memory
    elif part == "ports":
        del spec.ports[:]
        spec.ports.extend(args.ports)
    elif part == "command":
        del spec.command[:]
        spec.command.extend(args.argv)
    else:  # pragma: no cover - the parser offers only the parts above
        raise UsageError(f"unknown part {part!r}")


async def cmd_set(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    rollouts.check_change_flags(args)
    current = await client.get_status(args.service_id, namespace=args.namespace)
    if not current.HasField("spec"):
        raise UsageError(
            f"provider {current.provider!r} cannot read back the spec of {args.service_id}: "
            "restate it whole with 'alphaswarm start'"
        )
    spec = types_pb2.DeploymentSpec()
    spec.CopyFrom(current.spec)
    if any(value == SECRET_MASK for value in spec.env.values()):
        raise UsageError(
            "the server masked the env values (your role is below operator): "
            "set would overwrite them with the mask"
        )
    # The write is conditional on the revision read, where the provider keeps revisions:
    # a change someone made in between is refused (REVISION_CONFLICT), not overwritten.
    expected = args.expected_revision or current.revision
    service = f"{current.namespace}/{current.service_id}"
    if args.part == "replicas":
        if args.dry_run:
            planned = await client.plan_scale(
                args.service_id, args.replicas, namespace=args.namespace, expected_revision=expected
            )
            return rollouts.show_plan(out, planned, planned.plan, service)
        status = await client.scale_deployment(
            args.service_id, args.replicas, namespace=args.namespace, expected_revision=expected
        )
        _statuses(out, pb.ScaleDeploymentResponse(status=status), status)
        return 0
    _apply_part(spec, args)
    if current.state == types_pb2.DEPLOYMENT_STATE_STOPPED:
        spec.replicas = 0  # a change to a stopped service does not start it
    if args.dry_run:
        planned_start = await client.plan_start(spec, expected_revision=expected)
        return rollouts.show_plan(out, planned_start, planned_start.plan, service)
    status = await client.start_deployment(
        spec, expected_revision=expected, change_cause=args.change_cause
    )
    return await _changed(client, args, out, pb.StartDeploymentResponse(status=status), status)


# -- contexts (no server involved) -----------------------------------------------------------


def _config(args: argparse.Namespace) -> ConfigFile:
    return ConfigFile.load(args.context_file)


async def cmd_context_list(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    config = _config(args)
    data = {
        "currentContext": config.current,
        "contexts": [
            {"name": name, **_public(context)} for name, context in sorted(config.contexts.items())
        ],
    }
    if out.format is Format.NAME:
        for name in sorted(config.contexts):
            out.line(name)
        return 0
    if out.structured:
        from alphaswarm_client.output import to_json, to_yaml

        out.line(to_json(data) if out.format is Format.JSON else to_yaml(data))
        return 0
    rows = [
        [
            ("* " if name == config.current else "  ") + name,
            c.target or "-",
            c.namespace or "-",
            c.provider or "-",
            "mtls" if c.client_cert else ("tls" if c.tls or c.ca_cert else "-"),
            c.auth,
        ]
        for name, c in sorted(config.contexts.items())
    ]
    if not rows:
        out.line(f"no contexts in {config.path}; add one with 'alphaswarm context set NAME ...'")
        return 0
    out.line(
        render.table(
            ["  NAME", "TARGET", "NAMESPACE", "PROVIDER", "TLS", "AUTH"], rows, width=out.width
        )
    )
    return 0


def _public(context: Context) -> dict[str, object]:
    data = context.to_mapping()
    if "token" in data:
        data["token"] = SECRET_MASK
    return data


async def cmd_context_use(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    config = _config(args)
    config.get(args.name)
    config.current = args.name
    config.save()
    out.line(f"current context: {args.name}")
    return 0


async def cmd_context_current(
    client: AlphaswarmClient, args: argparse.Namespace, out: Output
) -> int:
    config = _config(args)
    name = args.context_name or config.current
    if not name:
        raise ContextError(f"no current context in {config.path}")
    out.line(name)
    return 0


async def cmd_context_delete(
    client: AlphaswarmClient, args: argparse.Namespace, out: Output
) -> int:
    config = _config(args)
    config.get(args.name)
    del config.contexts[args.name]
    if config.current == args.name:
        config.current = ""
    config.save()
    out.line(f"deleted context {args.name}")
    return 0


async def cmd_context_set(client: AlphaswarmClient, args: argparse.Namespace, out: Output) -> int:
    name = check_name(args.name)
    config = _config(args)
    context = config.contexts.get(name, Context())
    given = args.explicit
    for key in ("target", "provider", "namespace", "ca_cert", "client_cert", "client_key"):
        if key in given:
            value = given[key]
            if key in ("ca_cert", "client_cert", "client_key") and value:
                value = str(_absolute(value))
            setattr(context, key, value)
    if "tls_server_name" in given:
        context.tls_server_name = given["tls_server_name"]
    if "tls" in given:
        context.tls = bool(given["tls"])
    if args.token_file is not None:
        context.token_file, context.token_command, context.token = (
            str(_absolute(args.token_file)) if args.token_file else "",
            [],
            "",
        )
    if args.token_command is not None:
        context.token_command, context.token_file, context.token = (
            shlex.split(args.token_command),
            "",
            "",
        )
    if "token" in given:
        if not args.store_token:
            raise UsageError(
                "a token is not stored in the config file unless asked: use --token-file "
                "or --token-command, or add --store-token"
            )
        context.token, context.token_file, context.token_command = given["token"], "", []
    config.contexts[name] = context
    if args.use or not config.current:
        config.current = name
    config.save()
    out.line(
        f"context {name} saved in {config.path}" + (" (current)" if config.current == name else "")
    )
    return 0


def _absolute(path: str) -> object:
    from pathlib import Path

    return Path(path).expanduser().resolve()
