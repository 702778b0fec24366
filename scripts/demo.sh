#!/usr/bin/env bash
# Set up .venv, start the embedded servers, create a demo queue with 100 messages,
# and run the daemon (master + 1 worker) in the foreground. Ctrl-C stops it gracefully.
# Watch it from another terminal: .venv/bin/orchestrator status
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
orch=.venv/bin/orchestrator
$orch services start
$orch queue list --json | grep -q '"name": "demo"' || $orch queue create demo --concurrency 3
$orch queue send demo 100
exec $orch run --mode MW
