#!/usr/bin/env bash
# Ingest benchmark: wrk (-t2 -c64 -d10s) POSTs the Ezzing `opportunity_created` example as JSON
# to the webhook source (default durability: the answer waits for the spool commit; a file sink
# archives every event), and in the same run to the references below. Each server is pinned to
# one core, wrk to the other. The servers are measured in turns, ROUNDS times, and each one's
# best round counts (the least disturbed by whatever else runs on the machine); every round is
# printed. Prints req/s and p99 of each, the ratio to nginx with its target, and checks that
# every 2xx-answered request reached the sink.
# References:
#   nginx `return 200` (one worker): the ceiling. The same HTTP/1.1 keep-alive exchange on the same
#     core with no work at all behind it (no body parsed, nothing stored), so no server that does
#     the work can be faster; the target is a fraction of it.
#   Fluent Bit (only when `fluent-bit` is installed): a peer, not a ceiling. Its HTTP input to a
#     file output does similar work but answers before anything is on disk.
# Usage: bench/ingest.sh   (env: PX_BUILD_DIR=build, DURATION=10s, ROUNDS=2, SERVER_CPU=1,
#                           CLIENT_CPU=0, FLUENT_BIT=path of fluent-bit)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${PX_BUILD_DIR:-build}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
export BENCH_BODY=$PWD/bench/payloads/opportunity_created.json
LUA=$PWD/bench/post.lua

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
scripts/build.sh "$BUILD"

tmp=$(mktemp -d /tmp/px-bench-ingest.XXXXXX)
pids=()
cleanup() {
    # TERM first: nginx's master then stops its worker too
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 100); do
        if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2
    return 1
}

run_wrk() { # url label round
    taskset -c "$CLIENT_CPU" wrk -t2 -c64 -d"$DURATION" -s "$LUA" "$1" >"$tmp/wrk-$2-$3.txt"
    grep '^BENCH ' "$tmp/wrk-$2-$3.txt"
}

field() { # line name
    echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

rate() { # line: requests per second
    awk -v n="$(field "$1" requests)" -v us="$(field "$1" duration_us)" 'BEGIN { printf "%.0f", n / (us / 1e6) }'
}

summary() { # label line
    awk -v label="$1" -v n="$(field "$2" requests)" -v us="$(field "$2" duration_us)" \
        -v p99="$(field "$2" p99_us)" -v ok="$(field "$2" ok)" -v other="$(field "$2" other)" \
        -v errs="$(field "$2" socket_errors)" 'BEGIN {
        printf "%-10s: %8.0f req/s  p99 %6.2f ms  (2xx %d, other %d, socket errors %d)\n", label, n / (us / 1e6), p99 / 1000, ok, other, errs
    }'
}

# nginx: return 200, one worker process, its own prefix and temp paths.
nginx_port=$(free_port)
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_port;
        location / { return 200; }
    }
}
CONF
taskset -c "$SERVER_CPU" /usr/sbin/nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
    -e "$tmp/nginx/logs/error.log" &
nginx_pid=$!
pids+=($nginx_pid)
wait_port "$nginx_port"

# Plexus: the default pipeline, webhook -> file sink, default durability.
px_port=$(free_port)
cat >"$tmp/plexus.yaml" <<YAML
version: 1
host:
  data_dir: $tmp/var
  plugin_path: $BUILD/plugins
  log: { level: info }
  http: { listen: "127.0.0.1:$px_port" }
plugins:
  webhook: { plugin: webhook, config: { path: /events } }
  archive: { plugin: file, config: { path: $tmp/events.jsonl, fsync: interval, fsync_interval: 1s } }
pipelines:
  - { name: webhook-to-archive, from: webhook, to: { sink: archive } }
YAML
taskset -c "$SERVER_CPU" "$BUILD/host/plexus" run -c "$tmp/plexus.yaml" --log-format json \
    >"$tmp/plexus.log" 2>&1 &
px_pid=$!
pids+=($px_pid)
wait_port "$px_port"

# Fluent Bit, when installed: HTTP input to a file output, one worker. A peer, not a ceiling.
FLUENT_BIT=${FLUENT_BIT:-$(command -v fluent-bit || command -v /opt/fluent-bit/bin/fluent-bit || true)}
fb_port=
if [ -n "$FLUENT_BIT" ]; then
    fb_port=$(free_port)
    mkdir -p "$tmp/fluent-bit"
    cat >"$tmp/fluent-bit/fluent-bit.conf" <<CONF
[SERVICE]
    Flush     1
    Log_Level error
[INPUT]
    Name   http
    Listen 127.0.0.1
    Port   $fb_port
[OUTPUT]
    Name   file
    Match  *
    Path   $tmp/fluent-bit
    File   events.jsonl
CONF
    taskset -c "$SERVER_CPU" "$FLUENT_BIT" -c "$tmp/fluent-bit/fluent-bit.conf" \
        >"$tmp/fluent-bit/log.txt" 2>&1 &
    pids+=($!)
    if ! wait_port "$fb_port" 2>/dev/null; then
        echo "fluent-bit did not start: its row is skipped" >&2
        fb_port=
    fi
fi

# The servers in turns, ROUNDS times; each one's best round counts.
declare -A best=()
for round in $(seq "$ROUNDS"); do
    for label in nginx plexus ${fb_port:+fluent-bit}; do
        case $label in
        nginx) port=$nginx_port ;;
        plexus) port=$px_port ;;
        fluent-bit) port=$fb_port ;;
        esac
        line=$(run_wrk "http://127.0.0.1:$port/events" "$label" "$round")
        summary "$label #$round" "$line"
        if [ -z "${best[$label]:-}" ] || [ "$(rate "$line")" -gt "$(rate "${best[$label]}")" ]; then
            best[$label]=$line
        fi
    done
done

# Every 2xx-answered event must reach the sink; requests cut off when wrk stopped may add a few.
ok=0
for f in "$tmp"/wrk-plexus-*.txt; do
    ok=$((ok + $(field "$(grep '^BENCH ' "$f")" ok)))
done
for _ in $(seq 300); do
    [ "$(wc -l <"$tmp/events.jsonl")" -ge "$ok" ] && break
    sleep 0.1
done
kill -TERM "$px_pid"
wait "$px_pid" || true
archived=$(wc -l <"$tmp/events.jsonl")
distinct=$(python3 -c 'import json, sys; print(len({json.loads(l)["id"] for l in open(sys.argv[1])}))' \
    "$tmp/events.jsonl")

echo "best of $ROUNDS rounds of $DURATION at 64 connections (each server on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU):"
summary nginx "${best[nginx]}"
summary plexus "${best[plexus]}"
if [ -n "${best[fluent-bit]:-}" ]; then
    summary fluent-bit "${best[fluent-bit]}"
fi
echo "reference : nginx return 200 is the ceiling: the same keep-alive HTTP exchange with no work"
echo "            behind it (nothing parsed, nothing stored)"
if [ -n "${best[fluent-bit]:-}" ]; then
    awk -v a="$(rate "${best[plexus]}")" -v b="$(rate "${best[fluent-bit]}")" 'BEGIN {
        printf "peer      : fluent-bit http -> file, answered before anything is on disk: plexus at %.2f of it\n", a / b
    }'
else
    echo "peer      : fluent-bit not installed (a peer, not a ceiling: its row is skipped)"
fi
awk -v a="$(rate "${best[plexus]}")" -v b="$(rate "${best[nginx]}")" \
    -v p99="$(field "${best[plexus]}" p99_us)" 'BEGIN {
    ratio = a / b
    printf "ratio is plexus req/s / nginx req/s; p99 is plexus at 64 connections\n"
    printf "ratio: %.2f (target >= 0.75) %s\n", ratio, (ratio >= 0.75 ? "ok" : "BELOW TARGET")
    printf "p99: %.2f ms (target <= 15 ms) %s\n", p99 / 1000, (p99 <= 15000 ? "ok" : "OVER TARGET")
}'
echo "persist : $ok answered 2xx, $distinct distinct events archived ($archived lines)"
if [ "$distinct" -lt "$ok" ]; then
    echo "error: some 2xx-answered requests were not persisted" >&2
    exit 1
fi
