#!/usr/bin/env bash
# Install Debian's Chromium for the dashboard's browser test (tests/browser), unless present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" chromium
chromium --version
