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
pytest -q -p no:cacheprovider "$@"
