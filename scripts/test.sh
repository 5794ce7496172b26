#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two pytest-xdist workers (OMNIFORGE_TEST_WORKERS=N to change, 0 for none): most of the suite waits on servers,
# subprocesses and Ray starting, so two run in about the time of one.
exec .venv/bin/python -m pytest -n "${OMNIFORGE_TEST_WORKERS:-2}" "$@"
