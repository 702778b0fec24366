#!/usr/bin/env bash
# Install what the fault tests need, unless present: iproute2 (`ip`, for hosts in network
# namespaces, tests/faults) and Debian's faketime (hosts with clocks off, tests/faults).
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
echo "installed ${missing[*]}"
