#!/usr/bin/env bash
# Spool benchmark. 1) Events/s through source -> router -> spool -> sink for N events of the
# Ezzing `opportunity_created` example (default durability; the source parses each event from
# text), twice: with a sink that completes at once (deliveries finished before the spool writer
# reaches them are never written), and with a sink that answers from a 1 ms timer (every event is
# written to the spool and deleted after its delivery). In the same run, the CPU floor: the same
# events only parsed and serialised again with jansson. All pinned to one core. 2) Peak RSS
# (VmHWM) of the host while PENDING events pile up in the spool behind a sink that is down.
# Usage: bench/spool.sh   (env: PX_BUILD_DIR=build, N=200000, PENDING=1000000, CPU=1)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${PX_BUILD_DIR:-build}
N=${N:-200000}
PENDING=${PENDING:-1000000}
CPU=${CPU:-1}
PAYLOAD=$PWD/bench/payloads/opportunity_created.json

scripts/build.sh "$BUILD"
tmp=$(mktemp -d /tmp/px-bench-spool.XXXXXX)
host_pid=
cleanup() {
    if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
        kill -9 "$host_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/plugins"
jflags=$(pkg-config --cflags --libs jansson)
for p in benchsource benchsink; do
    cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -fPIC -shared -fvisibility=hidden -Wl,--no-undefined \
        -Isdk/include "bench/plugins/$p.c" $jflags -o "$tmp/plugins/$p.so"
done
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra bench/floor.c $jflags -o "$tmp/floor"

# Starts the host on config $1 with its log in $2; sets host_pid.
start_host() {
    taskset -c "$CPU" "$BUILD/host/plexus" run -c "$1" --log-format json >"$2" 2>&1 &
    host_pid=$!
}

# Waits up to $3 seconds for the pattern $2 in log $1; prints the first match.
wait_log() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        if grep -o "$2" "$1" | head -1 | grep .; then
            return 0
        fi
        if ! kill -0 "$host_pid" 2>/dev/null; then
            echo "host exited:" >&2
            tail -20 "$1" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "timed out waiting for '$2'" >&2
    tail -20 "$1" >&2
    return 1
}

stop_host() {
    kill -TERM "$host_pid"
    wait "$host_pid" || true
    host_pid=
}

config() { # data_dir count sink_mode
    cat <<YAML
version: 1
host:
  data_dir: $1
  plugin_path: [$tmp/plugins]
  log: { level: info }
plugins:
  src: { plugin: benchsource, config: { payload_file: "$PAYLOAD", count: $2,
                                        type: ezzing.opportunity_created } }
  sink: { plugin: benchsink, config: { mode: $3, expect: $2 } }
pipelines:
  - { name: bench, from: src, to: { sink: sink } }
YAML
}

# Runs N events into a sink in mode $1; sets tp_seconds and tp_acked.
throughput() {
    config "$tmp/var-$1" "$N" "$1" >"$tmp/run-$1.yaml"
    start_host "$tmp/run-$1.yaml" "$tmp/run-$1.log"
    wait_log "$tmp/run-$1.log" "bench sink done n=[0-9]* mono_ns=[0-9]*" 600 >/dev/null
    local t0 t1 acked
    t0=$(wait_log "$tmp/run-$1.log" "bench source start mono_ns=[0-9]*" 5 | sed 's/.*=//')
    t1=$(wait_log "$tmp/run-$1.log" "bench sink done n=[0-9]* mono_ns=[0-9]*" 5 | sed 's/.*=//')
    acked=$(wait_log "$tmp/run-$1.log" "bench source done acked=[0-9]*" 60 | sed 's/.*=//')
    stop_host
    tp_seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    tp_acked=$acked
}

# 1) throughput
throughput ok
s_ok=$tp_seconds acked_ok=$tp_acked
throughput later
s_later=$tp_seconds acked_later=$tp_acked
floor_line=$(taskset -c "$CPU" "$tmp/floor" "$PAYLOAD" "$N")
floor=$(echo "$floor_line" | sed 's/.*events_per_s=//')

# 2) memory with PENDING events waiting for a sink that is down
config "$tmp/var2" "$PENDING" down >"$tmp/run2.yaml"
start_host "$tmp/run2.yaml" "$tmp/run2.log"
wait_log "$tmp/run2.log" "bench source done acked=[0-9]*" 1800 >/dev/null
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$host_pid/status")
spool_mb=$(du -sm "$tmp/var2" | cut -f1)
stop_host

awk -v n="$N" -v s="$s_ok" -v s2="$s_later" -v floor="$floor" -v acked="$acked_ok" \
    -v acked2="$acked_later" -v hwm="$hwm_kb" -v pend="$PENDING" -v spool="$spool_mb" \
    -v cpu="$CPU" 'BEGIN {
    rate = n / s; ratio = rate / floor; rate2 = n / s2; ratio2 = rate2 / floor; mib = hwm / 1024
    printf "spool   : %d events in %.2f s = %.0f events/s (source -> router -> spool -> sink completing at once, cpu %s)\n", n, s, rate, cpu
    printf "written : %d events in %.2f s = %.0f events/s (the same, sink completing from a 1 ms timer: every event written and deleted)\n", n, s2, rate2
    printf "floor   : %.0f events/s (jansson parse + serialise of the same payload, cpu %s)\n", floor, cpu
    printf "ratio   : %.2f (target >= 0.6) %s; written: %.2f\n", ratio, (ratio >= 0.6 ? "ok" : "BELOW TARGET"), ratio2
    printf "memory  : peak RSS %.1f MiB with %d events pending, spool %d MB on disk (target < 64 MiB) %s\n", mib, pend, spool, (mib < 64 ? "ok" : "OVER TARGET")
    if (acked != n || acked2 != n) { printf "error: %d and %d of %d events acknowledged\n", acked, acked2, n; exit 1 }
}'
