#!/usr/bin/env bash
# Configures (once) and builds a build directory. Usage: scripts/build.sh [DIR [MESON OPTIONS...]]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
werror=()
if [ "${CI:-}" = true ]; then
    werror=(-Dwerror=true)
fi
if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "${werror[@]}" "$@" >/dev/null
fi
ninja -C "$dir" >/dev/null || ninja -C "$dir"
