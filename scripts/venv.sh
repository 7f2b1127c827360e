#!/usr/bin/env bash
# Create or refresh .venv with the given extras and print its path.
#
#     bash scripts/venv.sh            # the server alone (local provider)
#     bash scripts/venv.sh dev,all-providers
#
# Installs only when pyproject.toml changed since the last install, or when an extra
# asked for is not installed yet. The venv keeps every extra asked for so far (an
# install is of their union), so switching between the README's commands (serve.sh
# wants `tools`, test.sh `dev,all-providers`) installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
venv="${ALPHASWARM_VENV:-.venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv" >&2 || {
        echo "venv: '$python -m venv' failed; on Debian: apt-get install -y python3-venv" >&2
        exit 1
    }
fi
stamp="$venv/.alphaswarm-installed"

# Prints "install EXTRAS" or "ok", and the stamp to write after an install. An extra
# stands for the extras it names (dev -> tools, otel; all-providers -> every provider).
plan="$("$venv/bin/python" - "$extras" "$stamp" <<'PY'
import hashlib, re, sys, tomllib
from pathlib import Path

asked, stamp = sys.argv[1], Path(sys.argv[2])
raw = Path("pyproject.toml").read_bytes()
project = tomllib.loads(raw.decode())["project"]
optional = project.get("optional-dependencies", {})
self_ref = re.compile(re.escape(project["name"]) + r"\[([^\]]*)\]")

def closure(names):
    seen, todo = set(), [n.strip() for n in names if n.strip()]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in optional:
            sys.exit(f"venv: pyproject.toml has no extra {name!r}: {', '.join(sorted(optional))}")
        seen.add(name)
        for requirement in optional[name]:
            for match in self_ref.finditer(requirement):
                todo.extend(match.group(1).split(","))
    return seen

# The uv that installs the venv: the dev extra's pin (the provider matrix uses it too).
uv = next((r for r in optional.get("dev", []) if re.fullmatch(r"uv==[0-9.]+", r)), None)
if uv is None:
    sys.exit("venv: the dev extra must pin uv (uv==X.Y.Z)")
digest = hashlib.sha256(raw).hexdigest()
wanted = closure(asked.split(","))
old_digest, _, old = (stamp.read_text().strip() if stamp.exists() else "").partition(" ")
installed = closure(n for n in old.split(",") if n in optional)
if old_digest == digest and wanted <= installed:
    print("ok")
else:
    union = ",".join(sorted(wanted | installed))
    print(f"install {union}")
    print(f"{digest} {union}")
    print(uv)
PY
)"
if [[ "$plan" != ok ]]; then
    union="$(sed -n '1s/^install //p' <<<"$plan")"
    echo "venv: installing alphaswarm-controller${union:+[$union]} into $venv" >&2
    # pip installs uv (and its own upgrade), and uv the rest: with uv's cache warm
    # (~/.cache/uv) a fresh venv takes 30 s instead of pip's minute and a half.
    "$venv/bin/python" -m pip install -q --upgrade pip "$(sed -n '3p' <<<"$plan")" >&2
    "$venv/bin/uv" pip install -q --python "$venv/bin/python" -e ".${union:+[$union]}" >&2
    sed -n '2p' <<<"$plan" >"$stamp"
fi
echo "$venv"
