#!/usr/bin/env bash
# apt-install.sh PACKAGE...: install Debian packages as root, or through sudo.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 \
    || { echo "$(basename "$0"): not root and no sudo; install $*" >&2; exit 1; }
  SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
