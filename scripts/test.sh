#!/usr/bin/env bash
# Set up .venv, then lint, type-check and run every test (the servers are started by fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check orchestrator cli tests
.venv/bin/mypy orchestrator cli
.venv/bin/python -m pytest "$@"
