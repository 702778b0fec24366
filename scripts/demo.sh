#!/usr/bin/env bash
# Set up .venv, start the embedded servers, create a demo queue with 100 messages,
# and run the daemon (master + 1 worker) in the foreground. Ctrl-C stops it gracefully.
# Watch it from another terminal: .venv/bin/orchestrator status
# ORCHESTRATOR_DEMO_SETUP=0 skips the setup step (.venv already set up).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${ORCHESTRATOR_DEMO_SETUP:-1}" = 0 ] || bash scripts/setup.sh
orch=.venv/bin/orchestrator
$orch services start
# The embedded SQS keeps nothing over a restart while MongoDB does: recreate in SQS
# the queues MongoDB knows (a run before this one may have created `demo`).
$orch queue sync >/dev/null
$orch queue list --json | grep -q '"name": "demo"' || $orch queue create demo --concurrency 3
$orch queue send demo 100
exec $orch run --mode MW
