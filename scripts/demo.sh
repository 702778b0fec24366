#!/usr/bin/env bash
# Set up .venv, start the embedded servers and show a demo queue with 100 messages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
orch=.venv/bin/orchestrator
$orch services start
$orch queue list --json | grep -q '"name": "demo"' || $orch queue create demo --concurrency 3
$orch queue send demo 100
$orch queue list
