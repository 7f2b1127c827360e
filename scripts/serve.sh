#!/usr/bin/env bash
# Set up (first run only) and start alphaswarm-server on the embedded `local` provider.
# Settings come from the environment: ALPHASWARM_CP_LISTEN (default 127.0.0.1:50051),
# ALPHASWARM_CP_PROVIDER (default local), ALPHASWARM_CP_STATE_DIR, ...
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(bash scripts/venv.sh "${ALPHASWARM_EXTRAS:-}")"
exec "$venv/bin/alphaswarm-server" "$@"
