#!/usr/bin/env bash
# Several hosts on PostgreSQL against one host on SQLite: see bench/cluster.py.
# Usage: bench/cluster.sh   (env: PX_BUILD_DIR=build, DURATION=8s)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || scripts/deps.sh test
exec python3 bench/cluster.py "$@"
