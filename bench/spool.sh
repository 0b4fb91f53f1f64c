#!/usr/bin/env bash
# Spool benchmark. 1) Events/s through source -> router -> spool -> sink for N events of the
# Ezzing `opportunity_created` example (default durability; the source parses each event from
# text), twice: with a sink that completes at once (deliveries finished before the spool writer
# reaches them are never written), and with a sink that answers from a 1 ms timer (every event is
# written to the spool and deleted after its delivery), and the latter again with a source that
# hands the host its text unparsed (shown, no target). In the same run, the CPU floor: the same
# events only parsed and serialised again with jansson. All pinned to one core. 2) Peak RSS
# (VmHWM) of the host while PENDING events pile up in the spool behind a sink that is down, and
# the disk they take (spool.db and its WAL) against PENDING times the payload's size; again with
# `spool.compress: zstd` when the host knows that option (the row is skipped otherwise), each event
# then with digits of its own (benchsource `vary_digits`), so no two payloads are the same.
# Usage: bench/spool.sh   (env: PX_BUILD_DIR=build, N=200000, PENDING=1000000, CPU=1; a smaller
# N and PENDING make a quick run)
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
        if grep -so "$2" "$1" | head -1 | grep .; then
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

config() { # data_dir count sink_mode [extra host line] [extra source options]
    cat <<YAML
version: 1
host:
  data_dir: $1
  plugin_path: [$tmp/plugins]
  log: { level: info }
  ${4:-}
plugins:
  src: { plugin: benchsource, config: { payload_file: "$PAYLOAD", count: $2,
                                        type: ezzing.opportunity_created ${5:-} } }
  sink: { plugin: benchsink, config: { mode: $3, expect: $2 } }
pipelines:
  - { name: bench, from: src, to: { sink: sink } }
YAML
}

# Runs N events into a sink in mode $2 (run named $1) with extra source options $3; sets
# tp_seconds and tp_acked.
throughput() {
    config "$tmp/var-$1" "$N" "$2" "" "${3:-}" >"$tmp/run-$1.yaml"
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
throughput ok ok
s_ok=$tp_seconds acked_ok=$tp_acked
throughput later later
s_later=$tp_seconds acked_later=$tp_acked
# the written path again with a source that hands the host its text unparsed (event_create_text,
# as the webhook does): what the spool's own writing costs, without the source's parse
throughput text later ", as_text: true"
s_text=$tp_seconds acked_text=$tp_acked
floor_line=$(taskset -c "$CPU" "$tmp/floor" "$PAYLOAD" "$N")
floor=$(echo "$floor_line" | sed 's/.*events_per_s=//')
# The same floor with ALIVE trees kept in memory, as the host keeps events while a sink answers
# (the source's window plus the sink's in-memory window): shown, not a target.
ALIVE=${ALIVE:-4096}
floor_alive=$(taskset -c "$CPU" "$tmp/floor" "$PAYLOAD" "$N" "$ALIVE" | sed 's/.*events_per_s=//')

# Bytes of the spool in data dir $1: spool.db and its WAL, once the writer has been idle long
# enough for the WAL to be truncated (10 s at most: then as they are).
spool_bytes() {
    local deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ] && [ -s "$1/spool.db-wal" ]; do
        sleep 0.2
    done
    local total=0 f
    for f in "$1/spool.db" "$1/spool.db-wal"; do
        [ -f "$f" ] && total=$((total + $(stat -c %s "$f")))
    done
    echo "$total"
}

# Runs PENDING events into a sink that is down with extra host line $2 and extra source options
# $3, in data dir $1; sets pend_hwm_kb (peak RSS) and pend_bytes (spool.db + WAL).
pending_run() {
    config "$1" "$PENDING" down "${2:-}" "${3:-}" >"$1.yaml"
    start_host "$1.yaml" "$1.log"
    wait_log "$1.log" "bench source done acked=[0-9]*" 3600 >/dev/null
    pend_hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$host_pid/status")
    pend_bytes=$(spool_bytes "$1")
    stop_host
}

# 2) memory and disk with PENDING events waiting for a sink that is down
pending_run "$tmp/var2"
hwm_kb=$pend_hwm_kb disk=$pend_bytes
zdisk=-1
config "$tmp/varz" 1 down "spool: { compress: zstd }" >"$tmp/zcheck.yaml"
if "$BUILD/host/plexus" check -c "$tmp/zcheck.yaml" >/dev/null 2>&1; then
    # every event's digits drawn anew: a compressor sees events that differ, as in real traffic
    pending_run "$tmp/varz" "spool: { compress: zstd }" ", vary_digits: true"
    zdisk=$pend_bytes
fi
payload_bytes=$(stat -c %s "$PAYLOAD")

awk -v n="$N" -v s="$s_ok" -v s2="$s_later" -v floor="$floor" -v acked="$acked_ok" \
    -v acked2="$acked_later" -v hwm="$hwm_kb" -v pend="$PENDING" -v disk="$disk" \
    -v zdisk="$zdisk" -v pl="$payload_bytes" -v cpu="$CPU" -v floor_alive="$floor_alive" \
    -v alive="$ALIVE" -v s3="$s_text" -v acked3="$acked_text" 'BEGIN {
    rate = n / s; ratio = rate / floor; rate2 = n / s2; ratio2 = rate2 / floor; mib = hwm / 1024
    rate3 = n / s3
    printf "reference: floor = the same %d-byte payload parsed and serialised again with jansson, %d times, in\n", pl, n
    printf "           this run on the same core: the least CPU any host spends per event of a source that parses\n"
    printf "           its messages (the host parses once and stores the source text; the floor parses and\n"
    printf "           serialises), so events/s above it means the host adds less than one serialisation.\n"
    printf "           disk reference = PENDING x payload bytes: the payloads themselves, what a spool that keeps\n"
    printf "           them as given cannot go below; compressed, well below it.\n"
    printf "spool   : %d events in %.2f s = %.0f events/s (source -> router -> spool -> sink completing at once, cpu %s)\n", n, s, rate, cpu
    printf "written : %d events in %.2f s = %.0f events/s (the same, sink completing from a 1 ms timer: every event written and deleted)\n", n, s2, rate2
    printf "written : %d events in %.2f s = %.0f events/s (the same, the source handing its text unparsed)\n", n, s3, rate3
    printf "floor   : %.0f events/s (jansson parse + serialise of the same payload, cpu %s)\n", floor, cpu
    printf "ratio   : spool %.2f (target >= 0.6) %s\n", ratio, (ratio >= 0.6 ? "ok" : "BELOW TARGET")
    printf "ratio   : written %.2f (target >= 1.0) %s\n", ratio2, (ratio2 >= 1.0 ? "ok" : "BELOW TARGET")
    printf "ratio   : written, text source %.2f (shown: the spool without the source parse)\n", rate3 / floor
    printf "floor   : %.0f events/s with %d parsed trees kept alive (the host holds about as many while a\n", floor_alive, alive
    printf "          sink answers); written / this floor %.2f (shown only: how much of the gap is the memory)\n", rate2 / floor_alive
    printf "memory  : peak RSS %.1f MiB with %d events pending (target < 64 MiB) %s\n", mib, pend, (mib < 64 ? "ok" : "OVER TARGET")
    d = disk / (pend * pl)
    printf "disk    : %.0f MB (spool.db + WAL) for %d pending events of %d bytes = %.0f bytes/event\n", disk / 1e6, pend, pl, disk / pend
    printf "ratio   : disk %.2f of the payloads (target <= 1.0) %s\n", d, (d <= 1.0 ? "ok" : "OVER TARGET")
    if (zdisk < 0) {
        printf "disk zstd: skipped (this host does not know spool.compress)\n"
    } else {
        z = zdisk / (pend * pl)
        printf "disk zstd: %.0f MB with spool.compress: zstd = %.0f bytes/event (each event with its own digits)\n", zdisk / 1e6, zdisk / pend
        printf "ratio   : disk zstd %.2f of the payloads (target <= 0.4) %s\n", z, (z <= 0.4 ? "ok" : "OVER TARGET")
    }
    if (acked != n || acked2 != n || acked3 != n) { printf "error: %d, %d and %d of %d events acknowledged\n", acked, acked2, acked3, n; exit 1 }
}'
