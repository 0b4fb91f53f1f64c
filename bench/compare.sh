#!/usr/bin/env bash
# Runs the throughput benches against two or more builds in one invocation, bench by bench and
# build after build (so machine drift hits each build alike), and prints each bench's output under
# the build's name. For before/after figures: build the older commit in its own work tree, then
#   bench/compare.sh ../old/build build
# Environment: BENCHES (default "spool ingest ezzing notification"); each bench's own variables
# (N, PENDING, DURATION, ...) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/compare.sh BUILD_DIR..." >&2; exit 2; }
benches=${BENCHES:-spool ingest ezzing notification}
status=0
for b in $benches; do
    for dir in "$@"; do
        [ -x "$dir/host/plexus" ] || { echo "no $dir/host/plexus: build it first" >&2; exit 1; }
        echo "=== $b, build $dir"
        if ! PX_BUILD_DIR=$dir "bench/$b.sh" "$dir" 2>&1; then
            echo "(bench $b failed on $dir)"
            status=1
        fi
    done
done
exit $status
