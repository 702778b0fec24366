#!/usr/bin/env bash
# Set up .venv, then lint, type-check and run every test (the servers are started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check orchestrator tests
.venv/bin/mypy orchestrator
# Tests mostly wait on daemons and servers: 4 at a time fill the 2 cores; the fault
# tests share one address plan and run one after another (xdist_group "faults").
.venv/bin/python -m pytest -n "${TEST_WORKERS:-4}" --dist loadgroup "$@"
