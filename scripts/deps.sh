#!/usr/bin/env bash
# Installs what Plexus needs to build, run and test on Debian 12, and nothing that is already
# there. Idempotent; run as root (or with sudo available). Usage: scripts/deps.sh [build|test]
set -euo pipefail

want=build
[ $# -gt 0 ] && want=$1

build_pkgs=(gcc pkg-config meson ninja-build python3
            libuv1-dev libjansson-dev libyaml-dev libcurl4-openssl-dev libsqlite3-dev libzstd-dev libpq-dev
            libhttp-parser-dev librabbitmq-dev libssl-dev ca-certificates clang-14
            libclang-rt-14-dev)
test_pkgs=(sqlite3 postgresql curl procps iproute2 rabbitmq-server nginx-light wrk systemd prometheus stress-ng
           chromium)

pkgs=("${build_pkgs[@]}")
if [ "$want" = test ]; then
    pkgs+=("${test_pkgs[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# Node.js may come from elsewhere than Debian (with npm bundled): only install it when absent.
if [ "$want" = test ]; then
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    sudo=
    if [ "$(id -u)" -ne 0 ]; then
        sudo=sudo
    fi
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Test peers from npm, pinned by tests/peers/package-lock.json.
if [ "$want" = test ] && [ -f tests/peers/package.json ]; then
    if [ ! -d tests/peers/node_modules ] || \
       [ tests/peers/package-lock.json -nt tests/peers/node_modules ]; then
        echo "deps: installing npm test peers"
        (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
        touch tests/peers/node_modules
    fi
fi
