#!/usr/bin/env bash
# Installs Debian's `prometheus` package (promtool for the rule tests, the server for the
# live dashboard tests) when either binary is missing. ops/bootstrap-system.sh does the
# installing, for every system tool riskstream runs (a JDK and Maven for Kafka too), each
# only when missing, so this returns at once on a machine that has them.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../bootstrap-system.sh"
