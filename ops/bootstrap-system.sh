#!/usr/bin/env bash
# Installs the system tools riskstream runs for real, only those that are missing:
# a C compiler and Python's headers (the score path's compiled kernels), a JDK and Maven
# (the Kafka broker is fetched from Maven Central and run with java), and Prometheus
# (promtool for rule tests, the server for the live dashboard test).
# Idempotent: a machine that has them returns at once.
set -euo pipefail

need=()
# a C compiler and Python's headers: pip builds the score path's kernels (streams/native)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
py="${PYTHON:-python3.11}"
if command -v "$py" >/dev/null 2>&1 && ! "$py" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  need+=(python3.11-dev)
fi
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || need+=(prometheus)

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: missing ${need[*]}; install them with your package manager (needs root)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's prometheus package starts a system service on install; riskstream starts its
# own instances on free ports, so the packaged daemon is not needed.
if [ -x /usr/sbin/service ] || [ -x /usr/bin/systemctl ]; then
  (systemctl stop prometheus prometheus-node-exporter || service prometheus stop) >/dev/null 2>&1 || true
fi
