#!/usr/bin/env bash
# Extra delivery latency caused by hot reloads (p50/p99 of event age at the sink), with reloads
# every 200 ms vs none, in the same run. Usage: bench/reload.sh [SECONDS per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh build
BENCH_SECONDS=${1:-10} PX_BUILD_DIR=build python3 bench/reload.py
