#!/usr/bin/env bash
# Stop the embedded servers that this DATA_DIR started (and only those).
set -euo pipefail
exec "$(dirname "$0")/../.venv/bin/orchestrator" services stop "$@"
