#!/usr/bin/env bash
# Start (or reuse) the embedded MongoDB-protocol and SQS servers for this DATA_DIR.
set -euo pipefail
exec "$(dirname "$0")/../.venv/bin/orchestrator" services start "$@"
