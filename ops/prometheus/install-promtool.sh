#!/usr/bin/env bash
# Installs Debian's `prometheus` package (it ships both `prometheus` and `promtool`) only
# when either binary is missing. Idempotent: returns at once on a machine that has them.
# riskstream starts its own Prometheus instances on free ports, so the packaged system
# service that apt starts on install is stopped again.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: promtool/prometheus missing; install Debian's 'prometheus' package (needs root)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian package: prometheus (promtool + server)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if command -v systemctl >/dev/null 2>&1 || command -v service >/dev/null 2>&1; then
  (systemctl stop prometheus || service prometheus stop) >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null && command -v prometheus >/dev/null
