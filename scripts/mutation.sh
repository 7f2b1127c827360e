#!/usr/bin/env bash
# The mutation score of the modules where a silent bug costs most, with the fast tests.
#
# mutmut (pinned in the dev extra) changes one small thing at a time in each module named
# by [tool.mutmut] only_mutate in pyproject.toml, runs the tests that reach it, and counts
# the mutants no test noticed. mutmut maps src/ (not server/) to import paths, so it runs
# in a staging copy where server/ is src/. Then scripts/mutation_score.py prints killed/total
# per module and the survivors, and fails below the target (docs/testing.md lists the
# survivors that are equivalent mutants, and why).
#
#     bash scripts/mutation.sh               # 2 parallel mutant runs; about 30 min on 2 cores
#     MUTATION_JOBS=1 bash scripts/mutation.sh
#
# Not part of scripts/test.sh: too slow for every run. MUTATION_DIR keeps the staging copy
# (default: a temporary directory, removed afterwards) for `mutmut show NAME` there.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

venv="$root/$(bash scripts/venv.sh dev,all-providers)"
jobs="${MUTATION_JOBS:-2}"
target="${MUTATION_TARGET:-90}"
if [[ -n "${MUTATION_DIR:-}" ]]; then
    stage="$MUTATION_DIR"
    rm -rf "$stage"
    mkdir -p "$stage"
else
    stage="$(mktemp -d -t alphaswarm-mutation.XXXXXX)"
    trap 'rm -rf "$stage"' EXIT
fi

# The sources, the tests and the configuration; nothing generated or cached.
tar -C "$root" --exclude=__pycache__ --exclude='*.egg-info' -cf - server tests pyproject.toml \
    | tar -C "$stage" -xf -
mv "$stage/server" "$stage/src"

start=$(date +%s)
(cd "$stage" && "$venv/bin/mutmut" run --max-children "$jobs")
echo "mutmut took $(( $(date +%s) - start )) s with $jobs parallel runs"
"$venv/bin/python" scripts/mutation_score.py "$stage/mutants" --target "$target"
