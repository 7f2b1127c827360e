#!/usr/bin/env bash
# Create or refresh .venv with the given extras; re-installs only when pyproject.toml changed.
#
#     bash scripts/venv.sh            # the server alone (local provider)
#     bash scripts/venv.sh dev,all-providers
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
target="."
[[ -n "$extras" ]] && target=".[$extras]"
stamp="$venv/.alphaswarm-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
    echo "venv: installing alphaswarm-controller${extras:+[$extras]} into $venv" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "$target" >&2
    echo "$want" >"$stamp"
fi
echo "$venv"
