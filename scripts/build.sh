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
    if ! out=$(meson setup "$dir" "${werror[@]}" "$@" 2>&1); then
        echo "$out"
        exit 1
    fi
fi
if ! out=$(ninja -C "$dir" 2>&1); then
    echo "$out" | grep -v '^\[' | tail -60
    exit 1
fi
