#!/usr/bin/env bash
# Install (or reuse) Azurite, Microsoft's Azure Storage emulator, and print the path of
# its blob service (azurite-blob), which the azure tests start for ACI revision records.
#
# From the npm registry, at the version pinned here, into
#   ${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/azurite/<version>/
# outside the work tree; an existing install is reused at once. With --if-built it only
# prints the path of an existing install (exit 3 if there is none). The tests start the
# blob service themselves (tests/fakes/azurite.py: a free port, in memory, a private
# temp dir as its working directory) and stop it when they end.
set -euo pipefail
AZURITE_VERSION=3.37.0
root="${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/azurite"
out="$root/$AZURITE_VERSION"
bin="$out/node_modules/.bin/azurite-blob"

if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
if [[ "${1:-}" == "--if-built" ]]; then
    echo "Azurite is not installed yet: run bash scripts/azurite/install.sh" >&2
    exit 3
fi
command -v npm >/dev/null || {
    echo "azurite: npm is needed (on Debian: apt-get install -y nodejs npm)" >&2
    exit 1
}

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9 # another run may be installing it: wait for it, then reuse
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
staging="$(mktemp -d "$root/.install.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "installing azurite $AZURITE_VERSION into $out (first time: about a minute)" >&2
# --ignore-scripts: Azurite needs no install script; none of its dependencies runs one.
npm install --prefix "$staging" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "azurite@$AZURITE_VERSION" >&2
mv "$staging" "$out"
trap - EXIT
echo "$bin"
