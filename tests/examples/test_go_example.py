"""The Go example's code generation set-up, checked without a Go toolchain.

CI has no Go, so examples/go cannot be compiled here. What can drift silently is
the glue between the three files: buf.gen.yaml must find the protos from
examples/go and give them a go_package under the module of go.mod, and main.go
must import exactly that package. `buf generate` runs with the committed template
and two stand-in plugins named protoc-gen-go and protoc-gen-go-grpc that report
what buf handed them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GO_EXAMPLE = REPO / "examples" / "go"

# A protoc plugin that answers with one JSON file listing, per file to generate,
# its go_package option and the parameter it was given.
STAND_IN = """
import json, sys
from google.protobuf.compiler import plugin_pb2
request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
files = {f.name: f.options.go_package for f in request.proto_file}
report = {
    "parameter": request.parameter,
    "files": {name: files[name] for name in request.file_to_generate},
}
response = plugin_pb2.CodeGeneratorResponse(
    supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
)
response.file.add(name=sys.argv[1] + ".json", content=json.dumps(report))
sys.stdout.buffer.write(response.SerializeToString())
"""


def buf_binary() -> str:
    found = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    if not Path(found).exists():
        pytest.fail("buf (PyPI buf-bin, in the dev extra) must be installed", pytrace=False)
    return found


def stand_in_plugins(bin_dir: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "stand_in.py"
    script.write_text(STAND_IN)
    for name in ("protoc-gen-go", "protoc-gen-go-grpc"):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" {name}\n')
        shim.chmod(0o755)


def test_buf_generate_gives_main_go_the_package_it_imports(tmp_path: Path) -> None:
    stand_in_plugins(tmp_path / "bin")
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    generated = subprocess.run(
        [buf_binary(), "generate", "-o", str(out)],
        cwd=GO_EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr

    module = re.search(r"^module (\S+)$", (GO_EXAMPLE / "go.mod").read_text(), re.M)
    assert module is not None
    package = f"{module.group(1)}/gen/alphaswarm/provider/v1"
    for plugin in ("protoc-gen-go", "protoc-gen-go-grpc"):
        report = json.loads((out / "gen" / f"{plugin}.json").read_text())
        assert report["parameter"] == "paths=source_relative"
        protos = (REPO / "protos").glob("alphaswarm/provider/v1/*.proto")
        assert report["files"] == {
            str(p.relative_to(REPO / "protos")): f"{package};providerv1" for p in protos
        }
    assert f'providerv1 "{package}"' in (GO_EXAMPLE / "main.go").read_text()
