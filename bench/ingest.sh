#!/usr/bin/env bash
# Ingest benchmark: wrk (-t2 -c64 -d10s) POSTs the Ezzing `opportunity_created` example as JSON
# to the webhook source (default durability: the answer waits for the spool commit; a file sink
# archives every event), and in the same run to nginx `return 200` (one worker). Each server is
# pinned to one core, wrk to the other. Prints req/s and p99 of both, the ratio, and checks that
# every 2xx-answered request reached the sink.
# Usage: bench/ingest.sh   (env: PX_BUILD_DIR=build, DURATION=10s, SERVER_CPU=1, CLIENT_CPU=0)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${PX_BUILD_DIR:-build}
DURATION=${DURATION:-10s}
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
    for p in "${pids[@]}"; do
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

run_wrk() { # url label
    taskset -c "$CLIENT_CPU" wrk -t2 -c64 -d"$DURATION" -s "$LUA" "$1" >"$tmp/wrk-$2.txt"
    grep '^BENCH ' "$tmp/wrk-$2.txt"
}

field() { # line name
    echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
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
pids+=($!)
wait_port "$nginx_port"
nginx_line=$(run_wrk "http://127.0.0.1:$nginx_port/events" nginx)
kill -TERM "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true

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
px_line=$(run_wrk "http://127.0.0.1:$px_port/events" plexus)
ok=$(field "$px_line" ok)
# Every 2xx-answered event must reach the sink; requests cut off when wrk stopped may add a few.
for _ in $(seq 300); do
    [ "$(wc -l <"$tmp/events.jsonl")" -ge "$ok" ] && break
    sleep 0.1
done
kill -TERM "$px_pid"
wait "$px_pid" || true
archived=$(wc -l <"$tmp/events.jsonl")
distinct=$(python3 -c 'import json, sys; print(len({json.loads(l)["id"] for l in open(sys.argv[1])}))' \
    "$tmp/events.jsonl")

summary() { # label line
    awk -v label="$1" -v n="$(field "$2" requests)" -v us="$(field "$2" duration_us)" \
        -v p99="$(field "$2" p99_us)" -v ok="$(field "$2" ok)" -v other="$(field "$2" other)" \
        -v errs="$(field "$2" socket_errors)" 'BEGIN {
        printf "%-8s: %8.0f req/s  p99 %6.2f ms  (2xx %d, other %d, socket errors %d)\n", label, n / (us / 1e6), p99 / 1000, ok, other, errs
    }'
}
summary nginx "$nginx_line"
summary plexus "$px_line"
awk -v a="$(field "$px_line" requests)" -v ua="$(field "$px_line" duration_us)" \
    -v b="$(field "$nginx_line" requests)" -v ub="$(field "$nginx_line" duration_us)" \
    -v p99="$(field "$px_line" p99_us)" 'BEGIN {
    ratio = (a / ua) / (b / ub)
    printf "ratio   : %.2f of nginx (target >= 0.4) %s\n", ratio, (ratio >= 0.4 ? "ok" : "BELOW TARGET")
    printf "p99     : %.2f ms (target <= 15 ms) %s\n", p99 / 1000, (p99 <= 15000 ? "ok" : "OVER TARGET")
}'
echo "persist : $ok answered 2xx, $distinct distinct events archived ($archived lines)"
if [ "$distinct" -lt "$ok" ]; then
    echo "error: some 2xx-answered requests were not persisted" >&2
    exit 1
fi
