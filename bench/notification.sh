#!/usr/bin/env bash
# notification throughput: N notifications (default 40000) published by the host to a private
# RabbitMQ node with publisher confirms (testsource -> mapping -> notification sink, through the
# spool; a delivery is done only when the broker confirms it). The reference is a plain
# rabbitmq-c loop publishing the same kind of message with confirms and the same number
# unconfirmed at once (WINDOW, also the sink's max_inflight), against the same node in the same
# run. Prints notifications/s for both (median of ROUNDS alternating runs: the broker's speed
# drifts on a small machine) and their ratio.
#
#   bench/notification.sh [BUILD_DIR]   (default: build)
# Environment: N messages, WINDOW (reference window and sink max_inflight, default 256), INFLIGHT
# (the sink's max_inflight alone), BATCH (events the test source emits per loop turn), ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PX_BUILD_DIR=${1:-${PX_BUILD_DIR:-build}}
export PX_SOURCE_DIR=.
export N=${N:-40000} WINDOW=${WINDOW:-256} BATCH=${BATCH:-200} ROUNDS=${ROUNDS:-5}
[ -x "$PX_BUILD_DIR/host/plexus" ] || { echo "no $PX_BUILD_DIR/host/plexus: build first" >&2; exit 1; }
[ -x "$PX_BUILD_DIR/tests/amqp_tool" ] || { echo "no $PX_BUILD_DIR/tests/amqp_tool" >&2; exit 1; }

exec python3 - <<'EOF'
import json, os, statistics, subprocess, sys, time
sys.path.insert(0, "tests/integration")
from harness import Host, wait_for
from rabbit import Rabbit

N, WINDOW, BATCH, ROUNDS = (int(os.environ[k]) for k in ("N", "WINDOW", "BATCH", "ROUNDS"))
INFLIGHT = int(os.environ.get("INFLIGHT") or WINDOW)
TOOL = os.path.join(os.environ["PX_BUILD_DIR"], "tests", "amqp_tool")


def tool(*args):
    return subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True,
                          check=True).stdout


def count(url, q):
    return int(tool("count", url, q))


def host_run(r, q):
    cfg = f"""version: 1
host:
  data_dir: @TMP@/var
  plugin_path: [@TEST_PLUGINS@, @PLUGINS@]
  admin: {{ listen: "" }}
plugins:
  src: {{ plugin: testsource, config: {{ count: {N}, batch: {BATCH}, payload: {{ first: Ana }} }} }}
  nq: {{ plugin: notification, max_inflight: {INFLIGHT}, config: {{ url: "{r.url}", queue: {q} }} }}
pipelines:
  - name: invite
    from: src
    to:
      sink: nq
      with:
        name: USER_INVITEUSER
        to: "user{{{{/seq}}}}@example.com"
        to_name: "{{{{/first}}}}"
        macros: {{ FNAME: "{{{{/first}}}}", SEQ: "{{{{/seq}}}}" }}
"""
    with Host(cfg) as h:
        t0 = time.time()
        h.start()
        wait_for(lambda: count(r.url, q) >= N, timeout=600, interval=0.01, what="all published")
        secs = time.time() - t0
        h.stop()
    assert count(r.url, q) == N
    tool("delete", r.url, q)
    return N / secs


refs, hosts = [], []
with Rabbit() as r:
    for i in range(ROUNDS):
        ref = json.loads(tool("publish", r.url, f"bench_ref{i}", N, WINDOW))
        assert count(r.url, f"bench_ref{i}") == N
        tool("delete", r.url, f"bench_ref{i}")
        refs.append(ref["rate"])
        hosts.append(host_run(r, f"bench_host{i}"))
        print(f"round {i + 1}: reference {refs[-1]:.0f} msg/s, host {hosts[-1]:.0f} msg/s, "
              f"ratio {hosts[-1] / refs[-1]:.2f}", flush=True)
ref, host = statistics.median(refs), statistics.median(hosts)
print(f"reference (rabbitmq-c, confirms, window {WINDOW}): median {ref:.0f} msg/s")
print(f"host (testsource -> notification, confirms, max_inflight {INFLIGHT}, start-up included): "
      f"median {host:.0f} msg/s")
print(f"ratio host/reference: {host / ref:.2f}  ({N} messages, {ROUNDS} rounds)")
EOF
