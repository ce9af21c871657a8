#!/usr/bin/env bash
# The project's test command: set up (cached), then lint, type-check and run every test.
# With CI=true a skipped test fails the run: every real component must be there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check olivekube tests tools benchmarks
.venv/bin/ruff format --check olivekube tests tools benchmarks
.venv/bin/mypy olivekube
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest -p no:cacheprovider -rs --random-order "$@"
