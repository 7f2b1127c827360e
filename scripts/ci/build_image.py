"""Build the alphaswarm-server container image without any registry.

No registry can be reached from CI, so ``FROM python:3.11-slim`` cannot be pulled.
This script makes every input of the repository's Dockerfile locally:

1. **base image**: a minimal root filesystem assembled from this machine's own
   Python (the interpreter running this script: its binary, libpython, the
   standard library with ensurepip, and every shared library ``ldd`` finds for
   them and for the C extensions of the installed wheels), Debian's statically
   linked busybox for ``/bin/sh``, the CA bundle, and a minimal ``/etc``. It is
   built ``FROM scratch`` by adding that tarball, and tagged with a hash of its
   inputs, so a second run reuses it at once.
2. **wheelhouse**: ``pip wheel`` of the project's dependencies for the chosen
   extras (through this machine's pip and its cache), kept under
   ``$XDG_CACHE_HOME/alphaswarm/wheelhouse/<hash>`` so a second run is offline.
3. **image**: the Dockerfile with ``BASE_IMAGE`` set to (1) and the wheelhouse
   in the build context, so the builder stage installs with ``--no-index``.

Usage (prints the image tag on stdout, the build log on stderr)::

    python scripts/ci/build_image.py --extras kubernetes --tag alphaswarm-controller:dev

Needs ``DOCKER_HOST`` (``eval "$(bash scripts/ci/start-dockerd.sh)"``), the
docker SDK (extra ``docker_compose``) and ``/bin/busybox`` from busybox-static.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import docker
import docker.errors
from docker.utils.build import exclude_paths

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_REPOSITORY = "alphaswarm-base/python"
#: Inside the image, Python lives where the official python images put it.
PY_PREFIX = "usr/local"
#: Parts of the standard library a server never uses (tests, GUI, IDE, static lib).
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "lib2to3"}
#: Libraries manylinux wheels may link against without bundling them.
WHEEL_SYSTEM_LIBS = ("libstdc++.so.6", "libgcc_s.so.1", "libpthread.so.0", "librt.so.1")

BASE_DOCKERFILE = """\
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/bin:/usr/bin LANG=C.UTF-8 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="alphaswarm offline Python base" \\
      org.opencontainers.image.description="Python {version} and its libraries, from the build host"
CMD ["python3"]
"""

ETC_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "etc/os-release": 'NAME="alphaswarm offline base"\nID=alphaswarm-base\n',
}


def log(message: str) -> None:
    print(f"build_image: {message}", file=sys.stderr, flush=True)


@dataclass
class RootFS:
    """Entries of the base image's root filesystem: files, symlinks and directories."""

    files: dict[str, tuple[Path, int]] = field(default_factory=dict)  # arcname -> (source, mode)
    links: dict[str, str] = field(default_factory=dict)  # arcname -> target
    data: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)

    def add_file(self, arcname: str, source: Path, mode: int | None = None) -> None:
        self.files[arcname] = (source, mode if mode is not None else source.stat().st_mode & 0o777)

    def fingerprint(self) -> str:
        """A hash of every input: rebuilding only when something that goes in changed."""
        digest = hashlib.sha256(Path(__file__).read_bytes())
        for name in sorted(self.files):
            source, mode = self.files[name]
            stat = source.stat()
            digest.update(f"f {name} {source} {stat.st_size} {stat.st_mtime_ns} {mode}\n".encode())
        for name in sorted(self.links):
            digest.update(f"l {name} {self.links[name]}\n".encode())
        for name in sorted(self.data):
            digest.update(f"d {name} {self.data[name][1]}\n".encode() + self.data[name][0])
        for name in sorted(self.dirs):
            digest.update(f"D {name} {self.dirs[name]}\n".encode())
        return digest.hexdigest()

    def write(self, out: tarfile.TarFile) -> None:
        every_dir = dict(self.dirs)
        for name in [*self.files, *self.links, *self.data]:
            parent = Path(name).parent
            while str(parent) != ".":
                every_dir.setdefault(str(parent), 0o755)
                parent = parent.parent
        for name in sorted(every_dir):
            if name in self.links:
                continue
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = every_dir[name]
            out.addfile(info)
        for name in sorted(self.links):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = self.links[name]
            info.mode = 0o777
            out.addfile(info)
        for name in sorted(self.data):
            content, mode = self.data[name]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            out.addfile(info, io.BytesIO(content))
        for name in sorted(self.files):
            source, mode = self.files[name]
            info = tarfile.TarInfo(name)
            info.size = source.stat().st_size
            info.mode = mode
            with source.open("rb") as handle:
                out.addfile(info, handle)


def _ldd(paths: Iterable[Path], *, strict: bool = True) -> set[Path]:
    """The shared libraries (and the loader) these ELF files need, transitively.

    ``strict``: a library missing on this machine is an error (for the interpreter
    itself); otherwise the file is left out (an optional extension of some wheel).
    """
    found: set[Path] = set()
    for path in paths:
        done = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                found.add(Path(parts[2]))
            elif parts and parts[0].startswith("/"):
                found.add(Path(parts[0]))  # the loader: /lib64/ld-linux-x86-64.so.2
        if strict and "not found" in done.stdout:
            raise SystemExit(f"ldd {path}: a library is missing on this machine:\n{done.stdout}")
    return found


def _usrmerged(path: Path) -> str:
    """Where a host library goes in the image (Debian's merged /usr: /lib -> usr/lib)."""
    text = str(path)
    for top in ("/lib/", "/lib64/", "/bin/", "/sbin/"):
        if text.startswith(top):
            return "usr" + text
    return text.lstrip("/")


def _add_library(root: RootFS, path: Path) -> None:
    real = path.resolve()
    root.add_file(_usrmerged(real), real)
    wanted = _usrmerged(path)
    if wanted != _usrmerged(real):
        # The soname (libz.so.1) as a link to the real file (libz.so.1.2.13).
        root.links[wanted] = os.path.relpath(_usrmerged(real), str(Path(wanted).parent))


def python_rootfs() -> tuple[RootFS, str]:
    """The base root filesystem around the interpreter running this script."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary = prefix / "bin" / f"python{version}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not stdlib.is_relative_to(prefix):
        stdlib = prefix / "lib" / f"python{version}"
    if not (stdlib / "ensurepip" / "_bundled").is_dir():
        raise SystemExit(f"{stdlib} has no ensurepip: the image's `python3 -m venv` needs it")
    root = RootFS()
    root.add_file(f"{PY_PREFIX}/bin/python{version}", binary.resolve())
    for alias in ("python3", "python"):
        root.links[f"{PY_PREFIX}/bin/{alias}"] = f"python{version}"
    elves: list[Path] = [binary]
    for path in sorted(stdlib.rglob("*")):
        relative = path.relative_to(stdlib)
        if relative.parts[0] in STDLIB_SKIP or relative.parts[0].startswith("config-"):
            continue
        if path.is_dir() or path.name.endswith((".opt-1.pyc", ".opt-2.pyc")):
            continue
        if "_tkinter" in path.name:
            continue
        arcname = f"{PY_PREFIX}/lib/python{version}/{relative}"
        if path.is_symlink():
            root.links[arcname] = os.readlink(path)
            continue
        root.add_file(arcname, path)
        if path.suffix == ".so":
            elves.append(path)
    root.dirs[f"{PY_PREFIX}/lib/python{version}/site-packages"] = 0o755
    libraries = _ldd(elves)
    # C extensions of installed wheels (grpcio, psutil, ...) on this machine.
    site = Path(sysconfig.get_paths()["purelib"])
    found = _ldd(site.rglob("*.so"), strict=False)
    libraries |= {lib for lib in found if not lib.is_relative_to(site)}
    system_dir = next(lib.parent for lib in libraries if lib.name.startswith("libc.so"))
    libraries |= {system_dir / name for name in WHEEL_SYSTEM_LIBS if (system_dir / name).exists()}
    for lib in sorted(libraries):
        if lib.is_relative_to(prefix):
            # libpython: the binary's RUNPATH names the host prefix, so it goes
            # where the loader looks by default.
            root.add_file(_usrmerged(system_dir / lib.name), lib.resolve())
        else:
            _add_library(root, lib)
    _add_busybox(root)
    for top in ("bin", "lib", "lib64", "sbin"):
        root.links[top] = f"usr/{top}"
    for name, content in ETC_FILES.items():
        root.data[name] = (content.encode(), 0o644)
    if CA_BUNDLE.is_file():
        root.add_file("etc/ssl/certs/ca-certificates.crt", CA_BUNDLE, 0o644)
    root.dirs.update({"tmp": 0o1777, "root": 0o700, "var/tmp": 0o1777, "usr/sbin": 0o755})
    return root, sys.version.split()[0]


def _add_busybox(root: RootFS) -> None:
    linked = subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, text=True, check=False)
    if not BUSYBOX.is_file() or "not a dynamic executable" not in linked.stdout + linked.stderr:
        raise SystemExit(
            f"{BUSYBOX} must be Debian's statically linked busybox: apt-get install busybox-static"
        )
    root.add_file("usr/bin/busybox", BUSYBOX, 0o755)
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            root.links.setdefault(f"usr/bin/{applet}", "busybox")


def _build(
    api: docker.APIClient,
    context: IO[bytes],
    tag: str,
    *,
    dockerfile: str | None = None,
    buildargs: dict[str, str] | None = None,
) -> None:
    errors: list[str] = []
    for chunk in api.build(
        fileobj=context,
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        decode=True,
        dockerfile=dockerfile,
        buildargs=buildargs,
    ):
        if "stream" in chunk:
            sys.stderr.write(str(chunk["stream"]))
        if "error" in chunk:
            errors.append(str(chunk["error"]))
    if errors:
        raise SystemExit(f"building {tag} failed: {'; '.join(errors)}")


def _has_image(api: docker.APIClient, tag: str) -> bool:
    try:
        api.inspect_image(tag)  # type: ignore[no-untyped-call]
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(api: docker.APIClient) -> str:
    """Build the offline Python base image unless the engine has this exact one."""
    root, version = python_rootfs()
    tag = f"{BASE_REPOSITORY}:{version}-{root.fingerprint()[:12]}"
    if _has_image(api, tag):
        log(f"base image {tag} is up to date")
        return tag
    log(f"building base image {tag} ({len(root.files)} files from {sys.base_prefix})")
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as outer:
            dockerfile = BASE_DOCKERFILE.format(version=version).encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            outer.addfile(info, io.BytesIO(dockerfile))
            with tempfile.TemporaryFile() as rootfs:
                with tarfile.open(fileobj=rootfs, mode="w") as inner:
                    root.write(inner)
                info = tarfile.TarInfo("rootfs.tar")
                info.size = rootfs.tell()
                rootfs.seek(0)
                outer.addfile(info, rootfs)
        context.seek(0)
        _build(api, context, tag)
    return tag


def ensure_wheelhouse(extras: str) -> Path:
    """Wheels of every dependency for these extras (not the project itself: it changes)."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pyproject + f"\0{extras}\0{sys.version}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    house = cache / "alphaswarm" / "wheelhouse" / key
    marker = house / ".complete"
    if marker.is_file():
        log(f"wheelhouse {house} is up to date")
        return house
    house.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alphaswarm-wheelhouse-") as source:
        # setuptools builds in the source tree (build/, *.egg-info): a copy of what the
        # build reads keeps two builds at once (test workers, a developer) apart.
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, source)
        for name in ("server", "client"):
            shutil.copytree(
                REPO / name,
                Path(source) / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
            )
        target = f"{source}[{extras}]" if extras else source
        log(f"pip wheel {REPO}{f'[{extras}]' if extras else ''} into {house}")
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(house),
             target, "setuptools>=77", "wheel"],
            check=True,
            stdout=sys.stderr,
        )  # fmt: skip
    for own in house.glob("alphaswarm_controller-*.whl"):
        own.unlink()
    marker.write_text(json.dumps({"extras": extras}))
    return house


def image_context(wheelhouse: Path) -> Iterator[tuple[str, Path]]:
    """The repository files the Dockerfile sees (.dockerignore applies), plus the wheels."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in sorted(exclude_paths(str(REPO), patterns, "Dockerfile")):
        path = REPO / name
        if path.is_file() and not path.is_symlink():
            yield name, path
    for wheel in sorted(wheelhouse.glob("*.whl")):
        yield f"wheelhouse/{wheel.name}", wheel


def build_image(api: docker.APIClient, tag: str, extras: str) -> str:
    base = ensure_base_image(api)
    wheelhouse = ensure_wheelhouse(extras)
    log(f"building {tag} (EXTRAS={extras!r}, BASE_IMAGE={base})")
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, path in image_context(wheelhouse):
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
        context.seek(0)
        _build(
            api,
            context,
            tag,
            dockerfile="Dockerfile",
            buildargs={"BASE_IMAGE": base, "EXTRAS": extras},
        )
    return tag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tag", default="alphaswarm-controller:dev")
    parser.add_argument("--extras", default="", help="comma-separated, e.g. kubernetes,aws")
    parser.add_argument("--base-only", action="store_true", help="build only the base image")
    args = parser.parse_args(argv)
    host = os.environ.get("DOCKER_HOST")
    if not host:
        raise SystemExit('DOCKER_HOST is not set: eval "$(bash scripts/ci/start-dockerd.sh)"')
    api = docker.APIClient(base_url=host, version="auto", timeout=600)
    try:
        tag = ensure_base_image(api) if args.base_only else build_image(api, args.tag, args.extras)
    finally:
        api.close()
    print(tag)


if __name__ == "__main__":
    main()
