#!/usr/bin/env bash
# Set up (apt + .venv) and run every check: ruff, mypy --strict, import contracts,
# then the unit tests and the integration tests (real HAProxy, PostgreSQL, processes).
set -euo pipefail
cd "$(dirname "$0")/.."
SKYLIFT_SETUP_DEV=1 ./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy (strict)" >&2
mypy
echo "== import contracts" >&2
lint-imports
echo "== tests" >&2
# Two pytest-xdist workers on a machine with 2+ cores (SKYLIFT_TEST_WORKERS overrides;
# 0 runs in this process): every Docker test is in one group on one worker
# (--dist loadgroup), everything else spreads over both. See docs/testing.md.
workers="${SKYLIFT_TEST_WORKERS:-$(( $(nproc) >= 2 ? 2 : 0 ))}"
parallel=()
[ "$workers" -gt 0 ] && parallel=(-n "$workers" --dist loadgroup)
pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
