#!/usr/bin/env bash
# Installs what is missing, builds, and runs the host on etc/plexus.yaml (or the file given).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
scripts/build.sh build
exec ./build/host/plexus run -c "${1:-etc/plexus.yaml}"
