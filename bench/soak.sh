#!/usr/bin/env bash
# Soak test: MINUTES (default 5) of webhook, Ploomes, EventBridge and SQS (fauxqs) traffic through
# the bundled plugins, a flaky sink and a reload every minute; then checks that every acknowledged
# event was delivered, that RSS and open files stayed flat (start and end printed) and that the
# log has no error line. See bench/soak.py.
# Usage: bench/soak.sh [MINUTES]   (env: PX_BUILD_DIR=build, SOAK_RATE=40 webhook requests/s,
#                                    SOAK_NO_BUILD=1 to use the build as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${PX_BUILD_DIR:-build}
if [ -z "${SOAK_NO_BUILD:-}" ]; then
    scripts/build.sh "$BUILD"
fi
export PX_BUILD_DIR=$BUILD PX_SOURCE_DIR=$PWD PYTHONDONTWRITEBYTECODE=1
exec python3 bench/soak.py "${1:-5}"
